/**
 * Gradient accumulation over micro-batches. Two equivalent styles: add each micro-batch's gradient with
 * weight 1/steps (`accumulateGrad(rt, acc, g, 1 / steps)`, one pass each), or sum with weight 1 and
 * `averageGrads` once before the optimizer step. Either way the update sees the mean gradient, as
 * HF/fairseq do by dividing the loss by the accumulation count.
 */
import { axpyInPlace, scaleInPlace } from "../kernels/scale.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import type { Tensor } from "../kernels/tensor.ts"

/** acc += weight·g. */
export function accumulateGrad(rt: GpuRuntime, acc: Tensor, g: Tensor, weight = 1): void {
  axpyInPlace(rt, acc, g, weight)
}

/** Divides every accumulated gradient by the number of micro-batches. */
export function averageGrads(rt: GpuRuntime, grads: Iterable<Tensor>, steps: number): void {
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`averageGrads: steps must be an integer ≥ 1, got ${steps}`)
  if (steps === 1) return
  for (const g of grads) scaleInPlace(rt, g, 1 / steps)
}
