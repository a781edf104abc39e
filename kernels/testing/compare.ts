/**
 * The one comparison of the kernel table: an output against its float64 reference, element by element,
 * within a stated tolerance. A failure names the output, its max absolute and relative errors, and the
 * worst element (index, got, want, bound), so it says where to look. Plain errors, no test framework:
 * benches and any runtime can call it.
 */

/**
 * Element i passes when |got − want| ≤ abs + rel·max(|want_i|, floor) + scaled·max_j |want_j|.
 * Fields default to 0, so `{}` demands exact equality. `scaled` bounds the error relative to the
 * tensor's scale (for sums that cancel), `rel` relative to each element.
 */
export interface Tolerance {
  readonly abs?: number
  readonly rel?: number
  readonly floor?: number
  readonly scaled?: number
}

export interface Comparison {
  readonly ok: boolean
  readonly maxAbs: number
  /** Largest |got − want| / |want| over elements with want ≠ 0. */
  readonly maxRel: number
  /** The element furthest past (or nearest to) its bound; NaN counts as furthest. */
  readonly worst: { readonly index: number; readonly got: number; readonly want: number; readonly bound: number } | undefined
  readonly lengths: readonly [number, number]
}

export function compare(got: ArrayLike<number>, want: ArrayLike<number>, tol: Tolerance): Comparison {
  const lengths = [got.length, want.length] as const
  let scale = 0
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!))
  const base = (tol.abs ?? 0) + (tol.scaled ?? 0) * scale
  let ok = got.length === want.length
  let maxAbs = 0
  let maxRel = 0
  let worstRatio = -1
  let worst: Comparison["worst"]
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    const g = got[i]!, w = want[i]!
    const d = Math.abs(g - w)
    const bound = base + (tol.rel ?? 0) * Math.max(Math.abs(w), tol.floor ?? 0)
    // Equal values pass even at bound 0 (and ±Infinity equal to itself); NaN never passes.
    const ratio = g === w ? 0 : Number.isNaN(d) ? Infinity : bound > 0 ? d / bound : Infinity
    if (!(d <= bound) && g !== w) ok = false
    if (!(d <= maxAbs)) maxAbs = d
    if (w !== 0 && !(d / Math.abs(w) <= maxRel)) maxRel = d / Math.abs(w)
    if (ratio > worstRatio) {
      worstRatio = ratio
      worst = { index: i, got: g, want: w, bound }
    }
  }
  return { ok, maxAbs, maxRel, worst, lengths }
}

/** Row-major index of element `i` in `shape`, as "[r, c]" (or "[i]" without a shape). */
export function indexString(i: number, shape?: readonly number[]): string {
  if (shape === undefined || shape.length < 2) return `[${i}]`
  const idx: number[] = []
  let rest = i
  for (let d = shape.length - 1; d >= 0; d--) {
    idx.unshift(rest % shape[d]!)
    rest = Math.floor(rest / shape[d]!)
  }
  return `[${idx.join(", ")}]`
}

/** A value to 7 significant digits; an error to 3. */
const value = (v: number): string => (Number.isFinite(v) && v !== 0 ? String(Number(v.toPrecision(7))) : String(v))
const error = (v: number): string => (Number.isFinite(v) && v !== 0 ? v.toExponential(2) : String(v))

export const toleranceString = (tol: Tolerance): string =>
  Object.entries(tol).map(([k, v]) => `${k} ${error(v as number)}`).join(", ") || "exact"

export function describeComparison(what: string, c: Comparison, tol: Tolerance, shape?: readonly number[]): string {
  if (c.lengths[0] !== c.lengths[1]) return `${what}: ${c.lengths[0]} values, the reference has ${c.lengths[1]}`
  const w = c.worst
  const at = w === undefined ? "" : `; worst at ${indexString(w.index, shape)}: got ${value(w.got)}, want ${value(w.want)}, bound ${error(w.bound)}`
  return `${what}: max abs error ${error(c.maxAbs)}, max rel error ${error(c.maxRel)} (tolerance ${toleranceString(tol)})${at}`
}

/** Throws when `got` is not within `tol` of `want`; the message is `describeComparison`'s. */
export function expectClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: Tolerance, shape?: readonly number[]): Comparison {
  const c = compare(got, want, tol)
  if (!c.ok) throw new Error(describeComparison(what, c, tol, shape))
  return c
}

/** Throws unless `a` and `b` hold the same bits (for determinism: −0 ≠ 0, NaN payloads count). */
export function expectSameBits(what: string, a: Float32Array | Uint32Array | Float64Array, b: Float32Array | Uint32Array | Float64Array): void {
  if (a.length !== b.length || a.BYTES_PER_ELEMENT !== b.BYTES_PER_ELEMENT) throw new Error(`${what}: ${a.length} values against ${b.length}`)
  const ua = new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
  const ub = new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) {
      const at = Math.floor(i / a.BYTES_PER_ELEMENT)
      throw new Error(`${what}: bits differ first at [${at}]: ${a[at]} against ${b[at]}`)
    }
  }
}
