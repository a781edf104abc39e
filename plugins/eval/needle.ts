/**
 * LongRoPE2's needle-driven perplexity (§5.4): needleSample on the evaluation documents at depths
 * (i + 10j)/99 or a list; the NLL of the 7-digit answer tokens only; a perplexity row with protocol "needle".
 */
import { Effect } from "effect"
import { attempt, fail, type RopewayError } from "../../common/errors.ts"
import { Rng } from "../../common/rng.ts"
import { type NeedleSample, needleSample } from "../data/prompts.ts"
import { chunkOption, type EvalContext, saved, sha, tableAt } from "./context.ts"
import type { PerplexityEntry } from "./metrics.ts"
import { perplexityEstimate } from "./perplexity.ts"
import { type Method, tableKey } from "./protocols.ts"

export const NEEDLE_STREAM = 0x7eed1e

/** Needle depths for document i: the given list, or LongRoPE2's (i + 10j)/99, j = 0..9 (i taken mod 10). */
export const needleDepths = (doc: number, depths: readonly number[] | undefined): number[] =>
  depths !== undefined ? [...depths] : Array.from({ length: 10 }, (_, j) => ((doc % 10) + 10 * j) / 99)

export interface NeedleRequest {
  readonly methods: readonly Method[]
  /** Sorted, distinct. */
  readonly lengths: readonly number[]
  readonly depths: readonly number[] | undefined
  readonly seed: number
}

interface Sample {
  /** The document it was made from (the bootstrap's unit). */
  readonly doc: number
  readonly key: string
  readonly id: string
  readonly sample: NeedleSample
}

const samplesAt = (e: EvalContext, r: NeedleRequest, L: number): Effect.Effect<Sample[], RopewayError> =>
  attempt(`needle samples at ${L}`, () =>
    e.docs.flatMap((d, di) =>
      needleDepths(di, r.depths).map((depth, j) => ({
        doc: di,
        key: `${di}:${j}`,
        id: `${d.id}@needle(depth=${depth.toFixed(4)})`,
        sample: needleSample({ tokenizer: e.tok, document: d.ids, seqLen: L, rng: Rng.seeded(r.seed, NEEDLE_STREAM, L, di, j), depth }),
      })),
    ))

/** One method at one length: the answer tokens' NLL per sample, checkpointed. */
function needleRow(e: EvalContext, r: NeedleRequest, method: Method, L: number, samples: readonly Sample[]) {
  return Effect.gen(function* () {
    const table = yield* tableAt(e, method, L, L)
    const tk = tableKey(table)
    const nll: Array<{ doc: number; sum: number; count: number }> = []
    for (const [i, x] of samples.entries()) {
      const { start, end } = x.sample.answerSpan
      const value = yield* saved(
        e,
        `needle-${sha(`${tk}:${L}:${x.key}:${r.seed}:${e.chunk ?? 0}`)}`,
        async () => {
          const lp = await e.model.logprobs(Uint32Array.from(x.sample.ids), { rope: table, ...chunkOption(e) })
          let sum = 0
          for (let t = start; t < end; t++) sum -= lp[t - 1]!
          return { sum, count: end - start }
        },
        `needle pass ${method}@${L} on ${x.id}`,
      )
      nll.push({ doc: x.doc, ...value })
      yield* e.progress.report((i + 1) / samples.length, `needle ${method}@${L} ${i + 1}/${samples.length}`)
    }
    const interval = yield* perplexityEstimate(e, nll, "window-mean", `needle ${method} at ${L}`)
    const value = interval.value
    const row: PerplexityEntry = {
      method,
      model: e.label,
      length: L,
      value,
      interval,
      protocol: "needle",
      samples: samples.map((x) => x.id),
      bos: e.bos ? "BOS, instruction, document with the needle sentence at the depth, question, answer (LongRoPE2 §5.4)" : "no BOS (tokenizer has none); instruction, document with the needle, question, answer",
      aggregation: "exp(mean over samples of the answer tokens' mean NLL); only the 7-digit answer is scored",
      windows: nll.length,
      tokens: nll.reduce((a, w) => a + w.count, 0),
      scale: L / e.L0,
      rope: `${table.method}: ${table.reason}`,
      data: `${e.data}; needles: seed ${r.seed}, depths ${r.depths === undefined ? "(i + 10j)/99 for document i, j = 0..9" : r.depths.join(", ")}`,
      nll: nll.map((w) => ({ doc: e.docs[w.doc]!.id, sum: w.sum, count: w.count })),
    }
    yield* e.progress.log(`${method.padEnd(5)} L=${String(L).padStart(6)} needle   ppl ${value.toFixed(3)} [${interval.lo.toFixed(3)}, ${interval.hi.toFixed(3)}] (n=${interval.n})`)
    return row
  })
}

export function needlePerplexity(e: EvalContext, r: NeedleRequest): Effect.Effect<PerplexityEntry[], RopewayError> {
  return Effect.gen(function* () {
    const rows: PerplexityEntry[] = []
    for (const L of r.lengths) {
      const samples = yield* samplesAt(e, r, L)
      for (const method of r.methods) rows.push(yield* needleRow(e, r, method, L, samples))
    }
    return rows
  })
}
