/**
 * Perplexity by length: every (method, length, protocol) as windows over the documents, grouped into as
 * few forward passes as the numbers allow (protocols.ts `planPasses`), each pass checkpointed, then one
 * metrics.json row per measurement with the protocol, samples and BOS handling beside the value, and its
 * bootstrap interval (documents resampled with all their windows, unless the evaluation says windows).
 */
import { Effect } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { attempt, attemptPromise, fail, type RopewayError } from "../../common/errors.ts"
import { writeJsonAtomic } from "../../common/files.ts"
import type { ChosenTable } from "../rope/types.ts"
import { chunkOption, type EvalContext, sha, tableAt } from "./context.ts"
import type { PerplexityEntry } from "./metrics.ts"
import { type Estimate, type PerplexityAggregation, perplexityInterval, perplexityOf, type WindowNll } from "./intervals.ts"
import { AGGREGATION, AGGREGATION_OF, BOS_NOTE, type Measurement, type Method, type Pass, planPasses, type Protocol, windowNll } from "./protocols.ts"

export interface PerplexityRequest {
  readonly methods: readonly Method[]
  /** Sorted, distinct. */
  readonly lengths: readonly number[]
  readonly protocols: readonly Protocol[]
  /** Sliding protocol's stride (default min(256, L − 1)). */
  readonly stride: number | undefined
  /** Tokens per document (documents are cut to it). */
  readonly tokens: number
  /** Corpus documents shorter than a length's window are skipped there (evaluate's minTokens on a corpus). */
  readonly skipShort: boolean
  readonly minTokens: number | undefined
}

/** Every (method, length, protocol) with its table; tables are built once per (method, length). */
function requestsFor(e: EvalContext, r: PerplexityRequest) {
  return Effect.gen(function* () {
    const out: Array<{ method: Method; length: number; protocol: Protocol; table: ChosenTable; stride: number | undefined }> = []
    for (const method of r.methods) {
      for (const L of r.lengths) {
        const table = yield* tableAt(e, method, L, L)
        for (const protocol of r.protocols) {
          // stride > window is LongRoPE's Books3 protocol (§5.1: windows at 0, stride, 2·stride, each
          // tokens[begin : begin+L−1]): every window is scored whole and the text between them is skipped
          const stride = protocol === "sliding" ? r.stride ?? Math.min(256, L - 1) : undefined
          out.push({ method, length: L, protocol, table, stride })
        }
      }
    }
    return out
  })
}

/** Fails when a measurement has no window; logs the documents skipped and strides past the window. */
function checkMeasurements(e: EvalContext, r: PerplexityRequest, measurements: readonly Measurement[]) {
  return Effect.gen(function* () {
    const n = e.docs.length
    for (const m of measurements) {
      if (m.windows.length === 0) {
        if (m.skipped === n) return yield* fail(`${m.protocol} at length ${m.length}: all ${n} documents are shorter than the window (minTokens ${r.minTokens}); raise minTokens or drop the length`)
        return yield* fail(`${m.protocol} at length ${m.length}: no window fits the ${r.tokens}-token documents (chunked needs documents of ≥ L tokens; raise \`tokens\`)`)
      }
      if (m.skipped > 0 && m.method === r.methods[0] && m.protocol === r.protocols[0]) {
        yield* e.progress.log(`length ${m.length}: ${m.skipped} of ${n} documents shorter than the window, skipped`)
      }
      if (m.stride !== undefined && m.stride > m.length - (e.bos ? 1 : 0) && m.method === r.methods[0]) {
        yield* e.progress.log(`length ${m.length}: stride ${m.stride} > window, so windows start every ${m.stride} tokens and the text between them is not scored`)
      }
    }
  })
}

/** The passes, one at a time; each is saved so a re-run resumes after the last one finished. */
function runPasses(e: EvalContext, passes: readonly Pass[]): Effect.Effect<Float64Array[], RopewayError> {
  return Effect.gen(function* () {
    const logprobs: Float64Array[] = []
    for (const [i, pass] of passes.entries()) {
      const doc = e.docs[pass.doc]!
      const file = join(e.checkpointDir, `pass-${sha(`${pass.key}:${doc.id}:${pass.to}:${e.chunk ?? 0}`)}.json`)
      let lp: Float64Array
      if (existsSync(file)) lp = Float64Array.from(JSON.parse(readFileSync(file, "utf8")) as number[])
      else {
        const input = Uint32Array.from(e.bos ? [e.tok.bos!, ...doc.ids.slice(pass.from, pass.to)] : doc.ids.slice(pass.from, pass.to))
        const options = { rope: pass.table, ...chunkOption(e) }
        // the pass and its checkpoint together: an interrupt lands before or after both, never between
        lp = yield* Effect.uninterruptible(
          attemptPromise(`forward pass ${pass.label} on ${doc.id}`, () => e.model.logprobs(input, options)).pipe(
            Effect.tap((v) => attempt("checkpoint", () => writeJsonAtomic(file, Array.from(v)))),
          ),
        )
      }
      logprobs.push(lp)
      yield* e.progress.report((i + 1) / passes.length, `pass ${i + 1}/${passes.length} (${pass.label})`)
    }
    return logprobs
  })
}

/**
 * A perplexity with its bootstrap interval, as the evaluation's `intervals` say; fails naming `what` when
 * the value is not finite (non-finite log-probs).
 */
export function perplexityEstimate(e: EvalContext, windows: readonly WindowNll[], aggregation: PerplexityAggregation, what: string): Effect.Effect<Estimate, RopewayError> {
  const value = perplexityOf(windows, aggregation)
  if (!Number.isFinite(value)) return fail(`${what}: perplexity is ${value} (the forward pass gave non-finite log-probs)`)
  const { level, replicates, seed, resample } = e.intervals
  return attempt(`${what}: interval`, () => perplexityInterval(windows, aggregation, { level, replicates, seed, resample }))
}

/** Every measurement's row of metrics.json. */
export function perplexityByLength(e: EvalContext, r: PerplexityRequest): Effect.Effect<{ rows: PerplexityEntry[]; passes: number }, RopewayError> {
  return Effect.gen(function* () {
    const requests = yield* requestsFor(e, r)
    const { passes, measurements } = planPasses(requests, e.docs, e.bos, r.skipShort)
    yield* checkMeasurements(e, r, measurements)
    yield* e.progress.log(`${requests.length} measurements on ${e.docs.length} documents from ${passes.length} forward passes (${e.data}); L0 ${e.L0}`)
    const logprobs = yield* runPasses(e, passes)
    const rows: PerplexityEntry[] = []
    for (const m of measurements) {
      const nll = m.windows.map((w) => ({ doc: w.doc, ...windowNll(w.window, logprobs[w.pass]!, e.bos) }))
      const interval = yield* perplexityEstimate(e, nll, AGGREGATION_OF[m.protocol], `${m.method} at ${m.length} (${m.protocol})`)
      const value = interval.value
      rows.push({
        method: m.method,
        model: e.label,
        length: m.length,
        value,
        interval,
        protocol: m.protocol,
        samples: [...new Set(m.windows.map((w) => e.docs[w.doc]!.id))],
        bos: BOS_NOTE[m.protocol](e.bos),
        aggregation: AGGREGATION[m.protocol],
        ...(m.stride === undefined ? {} : { stride: m.stride }),
        ...(r.skipShort ? { skipped: m.skipped } : {}),
        windows: nll.length,
        tokens: nll.reduce((a, w) => a + w.count, 0),
        scale: m.length / e.L0,
        rope: `${m.table.method}: ${m.table.reason}`,
        data: e.data,
        nll: nll.map((w) => ({ doc: e.docs[w.doc]!.id, sum: w.sum, count: w.count })),
      })
      yield* e.progress.log(`${m.method.padEnd(5)} L=${String(m.length).padStart(6)} ${m.protocol.padEnd(8)} ppl ${value.toFixed(3)} [${interval.lo.toFixed(3)}, ${interval.hi.toFixed(3)}] (n=${interval.n})`)
    }
    return { rows, passes: passes.length }
  })
}
