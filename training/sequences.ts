/**
 * Packed training sequences as the model's loss calls see them. Documents are packed (plugins/data Packer,
 * BOS/EOS around each) into seqLen + 1 tokens: inputs are the first seqLen, targets the last seqLen. Two
 * layouts:
 * - continuous (LongRoPE's recipe): positions 0..seqLen−1 across document boundaries, plain causal
 *   attention, one RoPE table, the one for seqLen; every target scored.
 * - mixed context window (LongRoPE2): positions restart at every document, attention stays inside a
 *   document, and each document uses the factor set for its own length in the sequence, i.e. its largest
 *   position + 1 as in nnScaler's LongRoPE2 code. lossAndGrad takes one table per call, so a sequence's
 *   documents are grouped by table and each group is one call (its documents concatenated, kept apart by
 *   segment ids); the groups' gradients are weighted by their share of scored targets, so the update
 *   equals one pass over the sequence. A target that is the first token of the next document is not
 *   scored (its document is not visible to the query).
 * And PoSE position skipping (`skipPositions`), which moves positions up to a longer length.
 */
import { inputError } from "../common/errors.ts"
import type { Rng } from "../common/rng.ts"
import type { RopeTable } from "../kernels/rope-table.ts"

/** One lossAndGrad call: a group of documents (or the whole sequence) under one table. */
export interface Call {
  readonly inputs: Uint32Array
  readonly targets: Uint32Array
  readonly positions: Uint32Array | undefined
  readonly segments: Uint32Array | undefined
  /** Loss weight per target (0 = not scored); undefined: all 1. */
  readonly labelMask: Float32Array | undefined
  readonly rope: RopeTable
  /** Sum of this call's target weights (the scored targets when all weigh 1): its share of the sequence's loss. */
  readonly scored: number
}

/** A stable identity of a table's numbers, so documents whose lengths pick the same set share a call. */
const tableKeys = new WeakMap<RopeTable, string>()
const tableKey = (t: RopeTable): string => {
  let key = tableKeys.get(t)
  if (key === undefined) {
    const f = t.invFreq instanceof Float64Array ? [t.invFreq] : t.invFreq
    key = `${t.rotaryDim}|${t.startTokens}|${t.attentionScale}|${Array.from(t.originalInvFreq).join(",")}|${f.map((r) => Array.from(r).join(",")).join(";")}`
    tableKeys.set(t, key)
  }
  return key
}

export interface PositionSkip {
  /** The longest position + 1 a document may reach. */
  readonly length: number
  /** Pieces per document (default 2, as PoSE). */
  readonly chunks?: number
}

/** `positionSkip` checked against seqLen (which may come from a default): its length must reach past the sequence. */
export function positionSkipOf(stage: string, k: PositionSkip | undefined, seqLen: number): PositionSkip | undefined {
  if (k !== undefined && k.length <= seqLen) throw inputError(`${stage}.positionSkip.length`, `expected more than seqLen (${seqLen}) positions, got ${k.length}`)
  return k
}

/** A stream of Rng.seeded reserved for position skips. */
export const SKIP_STREAM = 0x505345

/**
 * PoSE (Zhu et al., 2024, "PoSE: Efficient Context Window Extension of LLMs via Positional Skip-wise
 * Training"; LongRoPE's own repo has 4k-PoSE runs): a document of n tokens is cut at `chunks − 1` random
 * points and piece j's positions are shifted by u_j, with 0 = u_0 ≤ u_1 ≤ … ≤ room = length − n drawn
 * uniformly. With 2 pieces its last position is uniform over [n − 1, length − 1], so relative distances and
 * query positions up to `length` are trained while each sequence costs seqLen tokens. The first piece
 * keeps position 0 (the BOS, which attention leans on). Fine-tuning without it trains the far end of
 * the window rarely (a position p is in a document only when the document is longer than p): measured on
 * the tiny model, the loss on the predictable passkey filler rises 10–100x in the last ~15% of the window.
 *
 * Positions are changed in place over the spans [from, to) of `spans`, each starting at position 0 or
 * at its own first position.
 */
export function skipPositions(positions: Int32Array, spans: ReadonlyArray<{ from: number; to: number }>, skip: PositionSkip, rng: Rng): void {
  const chunks = skip.chunks ?? 2
  for (const { from, to } of spans) {
    const n = to - from
    const room = skip.length - 1 - positions[to - 1]! // how far the last position may move
    if (n < 2 || room <= 0) continue
    const k = Math.min(chunks, n)
    const cuts = new Set<number>()
    while (cuts.size < k - 1) cuts.add(rng.int(1, n - 1))
    const at = [...cuts].sort((a, b) => a - b)
    const shifts = Array.from({ length: k - 1 }, () => rng.int(0, room)).sort((a, b) => a - b)
    for (let j = 0; j < at.length; j++) {
      const end = j + 1 < at.length ? at[j + 1]! : n
      for (let t = from + at[j]!; t < from + end; t++) positions[t] = positions[t]! + shifts[j]!
    }
  }
}

/**
 * Splits one packed sequence (seqLen + 1 tokens) into lossAndGrad calls. `tableFor(length)` is memoised
 * by the caller. Continuous: one call. Mixed: one call per distinct table among the documents.
 */
export function sequenceCalls(
  tokens: Int32Array, positions: Int32Array, docLengths: readonly number[], mixed: boolean, tableFor: (length: number) => RopeTable, weights?: Float32Array,
): Call[] {
  const T = tokens.length - 1
  const all = Uint32Array.from(tokens)
  // the weight of input t's target, token t + 1
  const wOf = (t: number): number => (weights === undefined ? 1 : weights[t + 1]!)
  if (!mixed) {
    const labelMask = weights === undefined ? undefined : weights.slice(1, T + 1)
    const scored = labelMask === undefined ? T : labelMask.reduce((a, x) => a + x, 0)
    const last = positions[T - 1]! + 1
    const pos = last === T ? undefined : Uint32Array.from(positions.subarray(0, T))
    return [{ inputs: all.subarray(0, T), targets: all.subarray(1), positions: pos, segments: undefined, labelMask, rope: tableFor(last), scored }]
  }
  const groups = new Map<string, { rope: RopeTable; spans: Span[] }>()
  for (const span of documentSpans(docLengths, T, true)) {
    // the set for the document's length: its largest position + 1 (more than its tokens when skipped)
    const rope = tableFor(positions[span.to - 1]! + 1)
    const key = tableKey(rope)
    let g = groups.get(key)
    if (g === undefined) groups.set(key, (g = { rope, spans: [] }))
    g.spans.push(span)
  }
  const calls: Call[] = []
  for (const g of groups.values()) {
    const n = g.spans.reduce((s, x) => s + x.to - x.from, 0)
    const inputs = new Uint32Array(n), targets = new Uint32Array(n), pos = new Uint32Array(n), seg = new Uint32Array(n), mask = new Float32Array(n)
    let k = 0, scored = 0
    g.spans.forEach((x, si) => {
      for (let t = x.from; t < x.to; t++, k++) {
        inputs[k] = all[t]!
        targets[k] = all[t + 1]!
        pos[k] = positions[t]!
        seg[k] = si
        // That cross-document target is not visible to the query (attention stays in the document): not scored.
        mask[k] = t === x.to - 1 && x.endsInside ? 0 : wOf(t)
        scored += mask[k]!
      }
    })
    if (scored > 0) calls.push({ inputs, targets, positions: pos, segments: seg, labelMask: mask, rope: g.rope, scored })
  }
  return calls
}

/** Inputs [from, to) of one document; endsInside: its last input predicts the next document's first token. */
export interface Span {
  readonly from: number
  readonly to: number
  readonly endsInside: boolean
}

/** The spans positions run over among the inputs [0, T): each packed document, the last one cut at T (mixed), or the whole sequence. */
export function documentSpans(docLengths: readonly number[], T: number, mixed: boolean): Span[] {
  if (!mixed) return [{ from: 0, to: T, endsInside: false }]
  const spans: Span[] = []
  let at = 0
  for (const len of docLengths) {
    const to = Math.min(at + len, T)
    if (to > at) spans.push({ from: at, to, endsInside: at + len <= T })
    at += len
  }
  return spans
}
