/** AdamW update kernel: p, m, v in place from a gradient, with a clip coefficient folded in. */
import { strideGroups } from "./add.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./adamw.wgsl", import.meta.url)

export interface AdamWHyper {
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  /** Decoupled weight decay (0 = plain Adam). */
  readonly weightDecay: number
}

/** torch.optim.AdamW's defaults except weight decay, which the LongRoPE recipe sets to 0. */
export const ADAMW_DEFAULTS: AdamWHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }

/** Uniforms for step `t` (1-based); the same for every tensor of that step, so build them once. */
export function adamwUniforms(h: AdamWHyper, lr: number, t: number, clip: number, weightDecay = h.weightDecay): Uint32Array {
  if (!Number.isInteger(t) || t < 1) throw new Error(`adamw: step must be a positive integer, got ${t}`)
  const bc1 = 1 - h.beta1 ** t
  const bc2 = 1 - h.beta2 ** t
  return uniforms([
    ["u32", 0], // n, set per tensor
    ["f32", 1 - lr * weightDecay],
    ["f32", h.beta1],
    ["f32", h.beta2],
    ["f32", 1 - h.beta1],
    ["f32", 1 - h.beta2],
    ["f32", lr / bc1],
    ["f32", Math.sqrt(bc2)],
    ["f32", h.eps],
    ["f32", clip],
  ])
}

/**
 * Records one AdamW update of `p` (and its moments `m`, `v`) from `g`. `params` comes from
 * `adamwUniforms`; it is copied, so one array can serve every tensor of a step.
 */
export function adamwStep(rt: GpuRuntime, p: Tensor, g: Tensor, m: Tensor, v: Tensor, params: Uint32Array): void {
  expectShape("adamw", "grad", g, p.shape)
  expectShape("adamw", "m", m, p.shape)
  expectShape("adamw", "v", v, p.shape)
  const n = numel(p.shape)
  const vec = n % 4 === 0
  const items = vec ? n / 4 : n
  const u = params.slice()
  u[0] = items
  rt.dispatch(rt.pipeline("adamw", src, vec ? "adamw4" : "adamw1"), [p, g, m, v], [strideGroups(rt, items, 64)], u)
}
