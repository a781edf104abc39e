/**
 * Perplexity protocols (longrope-method.md §5.1, peers.md §4), as plain arithmetic:
 *
 *   truncate  one window of L tokens per document (BOS + its first L−1 tokens), every token scored;
 *             PPL = exp(mean over windows of the window's mean NLL)      (LongRoPE / YaRN `--truncate`)
 *   sliding   windows of L starting every `stride` tokens, BOS first, only tokens no earlier window
 *             scored; PPL = exp(mean of window mean NLLs)                 (LongRoPE / YaRN default)
 *   chunked   non-overlapping chunks of L, BOS replacing each chunk's first token, the second half
 *             scored; PPL = exp(token-weighted mean NLL)                  (llama.cpp llama-perplexity)
 *
 * and the baselines compared (none / PI / NTK / YaRN at scale L/L0, or the model's own). Forward passes
 * are shared where the numbers allow (`planPasses`): a pass over BOS + doc[from..to) under one RoPE table
 * gives every window with the same start and table that ends earlier (attention is causal).
 */
import { createHash } from "node:crypto"
import type { RopeTable } from "../../kernels/rope-table.ts"
import { piFactors, yarnFactors } from "../rope/factors.ts"
import { factorSetFromHfLongrope, factorSetToScaling } from "../rope/formats.ts"
import { readResearch } from "../rope/longrope-research.ts"
import type { ChosenTable, RopeSpec } from "../rope/types.ts"
import { type PerplexityAggregation, perplexityOf } from "./intervals.ts"

export const PROTOCOLS = ["truncate", "sliding", "chunked"] as const
export type Protocol = (typeof PROTOCOLS)[number]

/**
 * One forward window over a document: the model sees `[BOS] + doc[from, to)` (no BOS when the tokenizer
 * has none) and the NLL of doc tokens `[scoreFrom, scoreTo)` counts, each predicted from everything before
 * it in the window.
 */
export interface Window {
  readonly from: number
  readonly to: number
  readonly scoreFrom: number
  readonly scoreTo: number
}

/** Index into a window's log-probs (length `to − from + bos − 1`) of doc token `t`'s log-prob. */
export const logprobIndex = (w: Pick<Window, "from">, t: number, bos: boolean): number => t - w.from - 1 + (bos ? 1 : 0)

/**
 * The windows a protocol scores on a document of `n` tokens at evaluation length `L` (tokens per window,
 * BOS included). `stride` is for sliding.
 */
export function protocolWindows(protocol: Protocol, n: number, L: number, bos: boolean, stride = 256): Window[] {
  const b = bos ? 1 : 0
  const cap = L - b // document tokens per window
  if (cap < 1 + (1 - b)) throw new RangeError(`length ${L} leaves no token to score`)
  switch (protocol) {
    case "truncate": {
      const to = Math.min(n, cap)
      return to - (1 - b) > 0 ? [{ from: 0, to, scoreFrom: 1 - b, scoreTo: to }] : []
    }
    case "sliding": {
      if (!Number.isInteger(stride) || stride < 1) throw new RangeError(`stride must be an integer ≥ 1, got ${stride}`)
      const out: Window[] = []
      let prevEnd = 0
      for (let begin = 0; begin < n; begin += stride) {
        const end = Math.min(begin + cap, n)
        // only tokens no earlier window scored; without BOS a window's first token has no context
        const scoreFrom = Math.max(prevEnd, begin + 1 - b)
        if (end > scoreFrom) out.push({ from: begin, to: end, scoreFrom, scoreTo: end })
        prevEnd = end
        if (end === n) break
      }
      return out
    }
    case "chunked": {
      // llama.cpp: n/L whole chunks; BOS overwrites the chunk's first token; logits from position L/2 on
      const first = Math.floor(L / 2)
      const out: Window[] = []
      for (let c = 0; (c + 1) * L <= n; c++) out.push({ from: c * L + b, to: (c + 1) * L, scoreFrom: c * L + first + 1, scoreTo: (c + 1) * L })
      return out
    }
  }
}

export const BOS_NOTE: Record<Protocol, (bos: boolean) => string> = {
  truncate: (bos) => (bos ? "BOS prepended to the window; the document's first L−1 tokens" : "no BOS (tokenizer has none); the document's first L tokens"),
  sliding: (bos) => (bos ? "BOS prepended to every window" : "no BOS (tokenizer has none)"),
  chunked: (bos) => (bos ? "BOS replaces the first token of each chunk (llama.cpp)" : "no BOS (tokenizer has none)"),
}

export const AGGREGATION: Record<Protocol, string> = {
  truncate: "exp(mean over documents of the window's mean NLL)",
  sliding: "exp(mean over all windows of the window's mean NLL)",
  chunked: "exp(token-weighted mean NLL over all chunks' second halves)",
}

/** NLL sum and count of a window, from the log-probs of a pass that starts where the window does. */
export function windowNll(w: Window, lp: ArrayLike<number>, bos: boolean): { sum: number; count: number } {
  let sum = 0
  for (let t = w.scoreFrom; t < w.scoreTo; t++) {
    const i = logprobIndex(w, t, bos)
    const v = lp[i]
    if (v === undefined) throw new RangeError(`log-prob ${i} missing (pass too short for window ${JSON.stringify(w)})`)
    sum -= v
  }
  return { sum, count: w.scoreTo - w.scoreFrom }
}

/** How each protocol's windows make one perplexity (intervals.ts perplexityOf). */
export const AGGREGATION_OF: Record<Protocol, PerplexityAggregation> = { truncate: "window-mean", sliding: "window-mean", chunked: "token-weighted" }

/** Perplexity from windows' NLLs by the protocol's aggregation. */
export const aggregate = (protocol: Protocol, windows: ReadonlyArray<{ sum: number; count: number }>): number => perplexityOf(windows, AGGREGATION_OF[protocol])

export const METHODS = ["model", "none", "pi", "ntk", "yarn", "model+pi", "model+yarn"] as const
export type Method = (typeof METHODS)[number]

/** Methods that extend the model's own longest factor set further (onTopScaling). */
export const ON_TOP = { "model+pi": "pi", "model+yarn": "yarn" } as const
export type OnTopMethod = keyof typeof ON_TOP
export const isOnTop = (m: Method): m is OnTopMethod => m in ON_TOP

/**
 * The HF rope_scaling a baseline uses at scale s = max(1, L/L0) (below the original context nothing is
 * interpolated); undefined = plain RoPE; "model" = the checkpoint's own.
 */
export function methodScaling(method: Exclude<Method, OnTopMethod>, s: number, L0: number): Record<string, unknown> | undefined | "model" {
  switch (method) {
    case "model":
      return "model"
    case "none":
      return undefined
    case "pi":
      return { rope_type: "linear", factor: s }
    case "ntk":
      return { rope_type: "ntk", factor: s }
    case "yarn":
      return { rope_type: "yarn", factor: s, original_max_position_embeddings: L0 }
  }
}

/**
 * `model+pi` / `model+yarn`: the model's longest factor set λ_ft (serving lengths up to L_ft) with PI or
 * YaRN (HF's formula, L_ft as its original length) at s_rel = max(1, L/L_ft) on top, λ = λ_ft ⊙ λ_rel:
 * how LongRoPE's paper extends a fine-tuned model further without a search (§3 step 4 compares its second
 * search against these). m follows the set's policy at scale s_ft · s_rel, as the second search's product
 * set does. A longrope-research scaling with that one set (critical-dim ramps already applied).
 */
export function onTopScaling(spec: RopeSpec, method: OnTopMethod, L: number): { scaling: Record<string, unknown>; relScale: number; window: number } {
  const type = spec.scaling?.["rope_type"] ?? spec.scaling?.["type"]
  const research =
    type === "longrope-research" ? readResearch(spec)
    : type === "longrope" || type === "su"
      ? readResearch({ ...spec, scaling: factorSetToScaling(factorSetFromHfLongrope(spec, { run_id: null, lengths: [spec.maxPositions], scale: 1, created: "" })) })
      : undefined
  if (research === undefined) throw new RangeError(`method ${method} needs a model with a factor set (rope_scaling longrope-research or longrope), got ${type === undefined ? "none" : String(type)}`)
  const ft = research.sets[research.sets.length - 1]!
  const relScale = Math.max(1, L / ft.maxLength)
  const geometry = { rotaryDim: spec.rotaryDim, base: spec.base, originalLength: ft.maxLength }
  const rel = ON_TOP[method] === "pi" ? piFactors(geometry, relScale) : yarnFactors(geometry, relScale)
  const times = (f: Float64Array): number[] => Array.from(f, (x, i) => x * rel[i]!)
  const set: Record<string, unknown> = {
    max_length: Math.max(L, ft.maxLength),
    factors: ft.factors instanceof Float64Array ? times(ft.factors) : ft.factors.map(times),
    // the set's scale grows with λ_rel, so m follows its policy at the new length
    scale: ft.scale * relScale,
    mscale: ft.mscale,
    start_tokens: ft.startTokens,
  }
  return { scaling: { rope_type: "longrope-research", original_max_position_embeddings: research.originalLength, sets: [set] }, relScale, window: ft.maxLength }
}

/** Content hash of a table: equal tables (e.g. every method at scale 1) share forward passes. */
export function tableKey(t: RopeTable): string {
  const h = createHash("sha256")
  const f64 = (a: Float64Array) => h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
  h.update(`${t.rotaryDim}|${t.startTokens}|${t.attentionScale}|`)
  if (t.invFreq instanceof Float64Array) f64(t.invFreq)
  else for (const a of t.invFreq) (h.update("|layer|"), f64(a))
  h.update("|orig|")
  f64(t.originalInvFreq)
  return h.digest("hex").slice(0, 24)
}

export interface Doc {
  readonly id: string
  readonly ids: readonly number[]
}

export interface Measurement {
  readonly method: Method
  readonly length: number
  readonly protocol: Protocol
  readonly table: ChosenTable
  readonly stride: number | undefined
  /** Documents left out at this length because they are shorter than its window (only with skipShort). */
  readonly skipped: number
  /** Per document: its windows, each with the pass that serves it. */
  readonly windows: ReadonlyArray<{ readonly doc: number; readonly window: Window; readonly pass: number }>
}

export interface Pass {
  readonly key: string
  readonly table: ChosenTable
  readonly doc: number
  readonly from: number
  to: number
  /** For progress notes. */
  readonly label: string
}

/**
 * Groups every window of every measurement into passes: one per (table, document, start), to the furthest
 * end. `skipShort`: a document shorter than a length's window (L − BOS tokens) is left out at that length
 * (counted in `skipped`) rather than scored on a shorter window reported as L.
 */
export function planPasses(
  requests: ReadonlyArray<{ method: Method; length: number; protocol: Protocol; table: ChosenTable; stride: number | undefined }>,
  docs: readonly Doc[],
  bos: boolean,
  skipShort = false,
): { passes: Pass[]; measurements: Measurement[] } {
  const passes: Pass[] = []
  const byKey = new Map<string, number>()
  const measurements = requests.map((r) => {
    const tk = tableKey(r.table)
    const fits = (d: Doc) => !skipShort || d.ids.length >= r.length - (bos ? 1 : 0)
    const skipped = docs.filter((d) => !fits(d)).length
    const windows = docs.flatMap((d, di) =>
      !fits(d) ? [] : protocolWindows(r.protocol, d.ids.length, r.length, bos, r.stride).map((window) => {
        const key = `${tk}:${di}:${window.from}`
        let pi = byKey.get(key)
        if (pi === undefined) {
          pi = passes.length
          byKey.set(key, pi)
          passes.push({ key, table: r.table, doc: di, from: window.from, to: window.to, label: `${r.method}@${r.length}` })
        } else {
          const p = passes[pi]!
          p.to = Math.max(p.to, window.to)
        }
        return { doc: di, window, pass: pi }
      }),
    )
    return { ...r, skipped, windows }
  })
  return { passes, measurements }
}
