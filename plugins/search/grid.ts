/**
 * The value grid (multiples of `step`, e.g. 0.01) and genome comparisons.
 * Grid values are produced as k·step rounded to the step's decimals, so 342 × 0.01 is exactly 3.42
 * and equal genes compare equal.
 */
import type { Genome } from "./types.ts"
import type { Rng } from "../../common/rng.ts"

const EPS = 1e-9

/** Standard normal (Box–Muller; the second value is dropped so the RNG state stays the only state). */
export function normal(rng: Rng): number {
  const u = 1 - rng.float() // (0, 1], keeps the log finite
  const v = rng.float()
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
}

export function stepDecimals(step: number): number {
  let d = 0
  while (d < 12 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-9) d++
  return d
}

export const gridValue = (k: number, step: number): number => Number((k * step).toFixed(stepDecimals(step)))

export const snap = (x: number, step: number): number => gridValue(Math.round(x / step), step)

export const onGrid = (x: number, step: number): boolean => Math.abs(x / step - Math.round(x / step)) < 1e-6

/** Smallest k with k·step ≥ lo (or > lo when strict). */
function kFrom(lo: number, step: number, strict: boolean): number {
  const j = lo / step
  const r = Math.round(j)
  if (Math.abs(j - r) < EPS) return strict ? r + 1 : r
  return Math.ceil(j)
}

/** Largest k with k·step ≤ hi (or < hi when strict). */
function kTo(hi: number, step: number, strict: boolean): number {
  const j = hi / step
  const r = Math.round(j)
  if (Math.abs(j - r) < EPS) return strict ? r - 1 : r
  return Math.floor(j)
}

/**
 * A grid value drawn uniformly between lo and hi (each end inclusive, or exclusive when strict), or undefined
 * when no grid point lies there (the caller then keeps the old value).
 */
export function drawGrid(rng: Rng, lo: number, hi: number, step: number, strictLo = false, strictHi = strictLo): number | undefined {
  const a = kFrom(lo, step, strictLo)
  const b = kTo(hi, step, strictHi)
  if (a > b) return undefined
  return gridValue(a + rng.int(0, b - a), step)
}

/** numpy.allclose(a, b) with its defaults: |a−b| ≤ atol + rtol·|b|. */
export function allclose(a: readonly number[], b: readonly number[], rtol = 1e-5, atol = 1e-8): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as number
    const y = b[i] as number
    if (!(Math.abs(x - y) <= atol + rtol * Math.abs(y))) return false
  }
  return true
}

const closeOpt = (a: number | undefined, b: number | undefined): boolean =>
  a === undefined || b === undefined ? a === b : Math.abs(a - b) <= 1e-8 + 1e-5 * Math.abs(b)

/** Same point of the search space: factors allclose, the optional genes equal. */
export function sameGenome(a: Genome, b: Genome): boolean {
  return (
    a.alpha === b.alpha &&
    a.beta === b.beta &&
    a.startToken === b.startToken &&
    closeOpt(a.attentionScale, b.attentionScale) &&
    allclose(a.factors, b.factors)
  )
}

const sum = (xs: readonly number[]): number => xs.reduce((s, x) => s + x, 0)

/**
 * Every genome seen in a run, for duplicate rejection. A linear scan like LongRoPE's, with a cheap
 * sum-of-factors prefilter (allclose implies the sums are within Σ(atol + rtol·|b|)).
 */
export class GenomeIndex {
  private readonly entries: { g: Genome; sum: number; abs: number }[] = []
  constructor(genomes: Iterable<Genome> = []) {
    for (const g of genomes) this.add(g)
  }
  add(g: Genome): void {
    this.entries.push({ g, sum: sum(g.factors), abs: sum(g.factors.map(Math.abs)) })
  }
  has(g: Genome): boolean {
    const s = sum(g.factors)
    for (const e of this.entries) {
      if (Math.abs(s - e.sum) > 1e-8 * g.factors.length + 1e-5 * e.abs + 1e-9) continue
      if (sameGenome(g, e.g)) return true
    }
    return false
  }
  get size(): number {
    return this.entries.length
  }
}
