/**
 * Short-context fidelity: at L0, perplexity and KL(base ‖ method) per position against this checkpoint
 * under plain RoPE, from full distributions (model.distributions, float64 on the host); the baselines at
 * the extension's scale (default longest length / L0), so the row says what the extension costs.
 */
import { Effect } from "effect"
import { attempt, fail, type RopewayError } from "../../common/errors.ts"
import { resolveRope } from "../rope/index.ts"
import type { ChosenTable } from "../rope/types.ts"
import { chunkOption, type EvalContext, saved, sha, tableAt } from "./context.ts"
import type { ShortEntry } from "./metrics.ts"
import { meanInterval } from "./intervals.ts"
import { perplexityEstimate } from "./perplexity.ts"
import { AGGREGATION, BOS_NOTE, type Method, tableKey } from "./protocols.ts"

/** KL(p ‖ q) = Σ p·(ln p − ln q) of two ln-prob rows at `offset`, in float64 (terms with p = 0 vanish). */
export const klRow = (lp: Float64Array, lq: Float64Array, offset: number, vocab: number): number => {
  let kl = 0
  for (let i = offset; i < offset + vocab; i++) {
    const a = lp[i]!
    if (a === -Infinity) continue
    kl += Math.exp(a) * (a - lq[i]!)
  }
  return kl
}

export interface ShortRequest {
  readonly methods: readonly Method[]
  /** The short length (L0 by default). */
  readonly length: number
  /** The baselines' scale. */
  readonly scale: number
  /** Tokens per document (must fill a window of `length`). */
  readonly tokens: number
}

/** The base table first, then each method's (equal tables once); `at[m]` is method m's index. */
function tablesFor(e: EvalContext, r: ShortRequest) {
  return Effect.gen(function* () {
    const base = yield* attempt("RoPE base", () => resolveRope({ ...e.spec, scaling: undefined }, "evaluate base")(r.length))
    const unique: ChosenTable[] = [base]
    const keyIndex = new Map([[tableKey(base), 0]])
    const at: number[] = []
    for (const method of r.methods) {
      const table = yield* tableAt(e, method, r.length, r.length, r.scale)
      const k = tableKey(table)
      if (!keyIndex.has(k)) (keyIndex.set(k, unique.length), unique.push(table))
      at.push(keyIndex.get(k)!)
    }
    return { unique, keys: [...keyIndex.keys()], at }
  })
}

/** Per document: NLL and KL to the base summed over positions, per table (checkpointed). */
function perDocument(e: EvalContext, r: ShortRequest, unique: readonly ChosenTable[], keys: readonly string[]) {
  return Effect.gen(function* () {
    const dist = e.model.distributions?.bind(e.model)
    if (dist === undefined) return yield* fail("short: the model gives no full distributions")
    const V = e.model.config.vocabSize
    const out: Array<{ nll: number[]; kl: number[]; positions: number }> = []
    for (const [di, d] of e.docs.entries()) {
      const input = Uint32Array.from(e.bos ? [e.tok.bos!, ...d.ids.slice(0, r.length - 1)] : d.ids.slice(0, r.length))
      const row = yield* saved(
        e,
        `short-${sha(`${keys.join(",")}:${r.length}:${d.id}:${e.chunk ?? 0}`)}`,
        async () => {
          const nll = unique.map(() => 0)
          const kl = unique.map(() => 0)
          await dist(input, unique, (from, count, rows) => {
            const b = rows[0]!
            for (let j = 0; j < count; j++) {
              const target = input[from + j + 1]!
              for (let k = 0; k < rows.length; k++) {
                nll[k]! -= rows[k]![j * V + target]!
                if (k > 0) kl[k]! += klRow(b, rows[k]!, j * V, V)
              }
            }
          }, chunkOption(e))
          return { nll, kl, positions: input.length - 1 }
        },
        `short-context pass on ${d.id}`,
      )
      out.push(row)
      yield* e.progress.report((di + 1) / e.docs.length, `short context ${di + 1}/${e.docs.length}`)
    }
    return out
  })
}

export function shortContext(e: EvalContext, r: ShortRequest): Effect.Effect<ShortEntry[], RopewayError> {
  return Effect.gen(function* () {
    if (r.tokens < r.length - (e.bos ? 1 : 0)) return yield* fail(`short: documents of ${r.tokens} tokens are shorter than a ${r.length}-token window (raise \`tokens\`)`)
    const { unique, keys, at } = yield* tablesFor(e, r)
    const docs = yield* perDocument(e, r, unique, keys)
    const rows: ShortEntry[] = []
    for (const [mi, method] of r.methods.entries()) {
      const k = at[mi]!
      const table = unique[k]!
      const interval = yield* perplexityEstimate(e, docs.map((x, doc) => ({ doc, sum: x.nll[k]!, count: x.positions })), "window-mean", `short ${method}`)
      const value = interval.value
      const perDoc = docs.map((x) => x.kl[k]! / x.positions)
      const kl = perDoc.reduce((a, x) => a + x, 0) / docs.length
      if (!Number.isFinite(kl)) return yield* fail(`short ${method}: KL ${kl} (non-finite log-probs)`)
      const { level, replicates, seed } = e.intervals
      const klInterval = yield* attempt(`short ${method}: KL interval`, () => meanInterval(perDoc, { unit: "documents", level, replicates, seed }))
      rows.push({
        method, model: e.label, length: r.length, perplexity: value, interval, kl, klInterval, baseline: "none", samples: e.docs.map((d) => d.id),
        divergence: "KL(base ‖ method) in nats per token, base = this checkpoint under plain RoPE; mean over positions, then over samples",
        aggregation: AGGREGATION.truncate, bos: BOS_NOTE.truncate(e.bos), positions: docs.reduce((a, x) => a + x.positions, 0), scale: r.scale,
        rope: `${table.method}: ${table.reason}`, data: e.data,
      })
      yield* e.progress.log(`${method.padEnd(5)} L=${String(r.length).padStart(6)} short    ppl ${value.toFixed(3)} KL ${kl.toExponential(3)}`)
    }
    return rows
  })
}
