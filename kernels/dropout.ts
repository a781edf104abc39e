/**
 * Inverted dropout (LoRA's input dropout): each element kept with probability 1 − p and scaled by 1/(1 − p).
 * The mask is a hash of (seed, element index), not a stored tensor: the backward multiplies the incoming
 * gradient by the same mask by calling `dropout` again with the same seed (dropout.wgsl).
 */
import { strideGroups } from "./add.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./dropout.wgsl", import.meta.url)

/** The uniform values for drop probability `p`: the hash threshold and the keep scale, as the kernel reads them. */
export function dropoutParams(p: number): { readonly threshold: number; readonly scale: number } {
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout: p must be in [0, 1), got ${p}`)
  return { threshold: Math.min(0xffffffff, Math.floor(p * 2 ** 32)), scale: Math.fround(1 / (1 - p)) }
}

/** A new tensor: x with the mask of `seed` (a u32) applied and kept values scaled by 1/(1 − p). */
export function dropout(rt: GpuRuntime, x: Tensor, p: number, seed: number): Tensor {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`dropout: seed must be a 32-bit unsigned integer, got ${seed}`)
  const { threshold, scale } = dropoutParams(p)
  const n = numel(x.shape)
  const out = rt.tensor(x.shape)
  const u = uniforms([["u32", n], ["u32", seed], ["u32", threshold], ["f32", scale]])
  rt.dispatch(rt.pipeline("dropout", src), [x, out], [strideGroups(rt, n, 64)], u)
  return out
}
