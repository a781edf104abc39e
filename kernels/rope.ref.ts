/** Float64 reference for applyRope: angles n·θ in float64, HF rotate_half pairing. */
import { type RopeTable, invFreqAt } from "./rope-table.ts"

/** cos and sin (times the scale) that position n gets for pair i at `layer`. */
export function ropeCosSinRef(table: RopeTable, layer: number, n: number, i: number): { angle: number; cos: number; sin: number } {
  const early = n < table.startTokens
  const theta = early ? table.originalInvFreq[i]! : invFreqAt(table, layer)[i]!
  const m = early ? 1 : table.attentionScale
  const angle = n * theta
  return { angle, cos: m * Math.cos(angle), sin: m * Math.sin(angle) }
}

/** Returns rotated x [T, heads·headDim] (x itself is not modified). */
export function ropeRef(
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  table: RopeTable,
  opts: { heads: number; headDim: number; layer: number },
): Float64Array {
  return rotateRef(x, positions, table, opts, 1)
}

/**
 * x [T, heads·headDim] with each rotary pair rotated by `direction`·angle and scaled by m
 * (1: the forward rotation R; −1: its transpose Rᵀ, used by the backward). x is not modified.
 */
export function rotateRef(
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  table: RopeTable,
  opts: { heads: number; headDim: number; layer: number },
  direction: 1 | -1,
): Float64Array {
  const { heads, headDim, layer } = opts
  const half = table.rotaryDim / 2
  const out = Float64Array.from(x)
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < half; i++) {
      const { cos, sin: s } = ropeCosSinRef(table, layer, positions[t]!, i)
      const sin = direction * s
      for (let h = 0; h < heads; h++) {
        const a = t * heads * headDim + h * headDim + i
        const u = x[a]!, v = x[a + half]!
        out[a] = u * cos - v * sin
        out[a + half] = v * cos + u * sin
      }
    }
  }
  return out
}
