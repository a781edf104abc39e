/** Builds ChosenTables from divisors or inverse frequencies. */
import { defaultInvFreq, invFreqAt, type RopeTable } from "../../kernels/rope-table.ts"
import type { ChosenTable, RopeSpec } from "./types.ts"

export interface TableParts {
  readonly method: string
  readonly reason: string
  /** θ'_i: one array, or one per layer. */
  readonly invFreq: Float64Array | readonly Float64Array[]
  readonly attentionScale?: number
  readonly startTokens?: number
}

export const chosen = (spec: RopeSpec, p: TableParts): ChosenTable => ({
  rotaryDim: spec.rotaryDim,
  invFreq: p.invFreq,
  originalInvFreq: defaultInvFreq(spec.base, spec.rotaryDim),
  startTokens: p.startTokens ?? 0,
  attentionScale: p.attentionScale ?? 1,
  method: p.method,
  reason: p.reason,
})

/** θ'_i = θ_i / λ_i for one divisor vector. */
export function divide(spec: RopeSpec, factors: Float64Array): Float64Array {
  const theta = defaultInvFreq(spec.base, spec.rotaryDim)
  return theta.map((t, i) => t / factors[i]!)
}

/** Divisors λ_i = θ_i / θ'_i of a table (per layer when the table is per layer). */
export function tableFactors(t: ChosenTable | import("../../kernels/rope-table.ts").RopeTable): Float64Array | Float64Array[] {
  const ratio = (inv: Float64Array) => t.originalInvFreq.map((o, i) => o / inv[i]!)
  return t.invFreq instanceof Float64Array ? ratio(t.invFreq) : t.invFreq.map(ratio)
}

/** Formats a number compactly for reasons. */
export const fmt = (x: number): string => (Number.isInteger(x) ? String(x) : x.toPrecision(6).replace(/\.?0+$/, ""))

/** Whether two tables rotate identically (same dims, frequencies per layer, n̂ and scale). */
export function sameRopeTable(a: RopeTable, b: RopeTable, numLayers: number): boolean {
  if (a === b) return true
  if (a.rotaryDim !== b.rotaryDim || a.startTokens !== b.startTokens || a.attentionScale !== b.attentionScale) return false
  const half = a.rotaryDim / 2
  const eq = (x: Float64Array, y: Float64Array): boolean => {
    for (let i = 0; i < half; i++) if (x[i] !== y[i]) return false
    return true
  }
  // n̂ = 0 means the original frequencies are never used, so they need not match.
  if (a.startTokens > 0 && !eq(a.originalInvFreq, b.originalInvFreq)) return false
  const layers = a.invFreq instanceof Float64Array && b.invFreq instanceof Float64Array ? 1 : numLayers
  for (let l = 0; l < layers; l++) if (!eq(invFreqAt(a, l), invFreqAt(b, l))) return false
  return true
}
