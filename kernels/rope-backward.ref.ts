/** Float64 reference for the RoPE backward: dx = Rᵀ·dy, i.e. rotation by −angle with the same scale m. */
import type { RopeTable } from "./rope-table.ts"
import { ropeCosSinRef } from "./rope.ref.ts"

export function ropeBackwardRef(
  dy: ArrayLike<number>,
  positions: ArrayLike<number>,
  table: RopeTable,
  opts: { heads: number; headDim: number; layer: number },
): Float64Array {
  const { heads, headDim, layer } = opts
  const half = table.rotaryDim / 2
  const out = Float64Array.from(dy)
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < half; i++) {
      const { cos, sin } = ropeCosSinRef(table, layer, positions[t]!, i)
      for (let h = 0; h < heads; h++) {
        const a = t * heads * headDim + h * headDim + i
        const u = dy[a]!, v = dy[a + half]!
        out[a] = u * cos + v * sin
        out[a + half] = v * cos - u * sin
      }
    }
  }
  return out
}
