/** Builds ChosenTables from divisors or inverse frequencies. */
import { defaultInvFreq } from "../../kernels/rope-table.ts"
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
