/** Float64 reference for one AdamW step (torch.optim.AdamW semantics), in place on float64 state. */
import type { AdamWHyper } from "./adamw.ts"

export interface AdamWRefState {
  readonly p: Float64Array
  readonly m: Float64Array
  readonly v: Float64Array
}

/** `t` is the 1-based step number of this update; `clip` multiplies the gradient first. */
export function adamwRef(s: AdamWRefState, grad: ArrayLike<number>, h: AdamWHyper, lr: number, t: number, clip = 1): void {
  const bc1 = 1 - h.beta1 ** t
  const bc2 = 1 - h.beta2 ** t
  for (let i = 0; i < s.p.length; i++) {
    const g = grad[i]! * clip
    const m = h.beta1 * s.m[i]! + (1 - h.beta1) * g
    const v = h.beta2 * s.v[i]! + (1 - h.beta2) * g * g
    s.m[i] = m
    s.v[i] = v
    s.p[i] = s.p[i]! * (1 - lr * h.weightDecay) - (lr / bc1) * (m / (Math.sqrt(v) / Math.sqrt(bc2) + h.eps))
  }
}
