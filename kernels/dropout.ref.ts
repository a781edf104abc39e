/** Float64 reference for dropout: the same hash, computed on the host (the mask is the specification). */
import { dropoutParams } from "./dropout.ts"

/** lowbias32, as dropout.wgsl computes it. */
export function mix32(v: number): number {
  let h = v >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x7feb352d) >>> 0
  h ^= h >>> 15
  h = Math.imul(h, 0x846ca68b) >>> 0
  h ^= h >>> 16
  return h >>> 0
}

/** x·scale where kept, else 0; the scale rounded to f32 as the kernel's uniform is, the product to f32 as the kernel's. */
export function dropoutRef(x: ArrayLike<number>, p: number, seed: number): Float64Array {
  const { threshold, scale } = dropoutParams(p)
  const key = mix32(seed)
  const out = new Float64Array(x.length)
  for (let i = 0; i < x.length; i++) out[i] = mix32((i ^ key) >>> 0) >= threshold ? Math.fround(x[i]! * scale) : 0
  return out
}
