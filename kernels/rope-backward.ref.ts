/** Float64 reference for the RoPE backward: dx = Rᵀ·dy, i.e. rotation by −angle with the same scale m. */
import type { RopeTable } from "./rope-table.ts"
import { rotateRef } from "./rope.ref.ts"

export function ropeBackwardRef(
  dy: ArrayLike<number>,
  positions: ArrayLike<number>,
  table: RopeTable,
  opts: { heads: number; headDim: number; layer: number },
): Float64Array {
  return rotateRef(dy, positions, table, opts, -1)
}
