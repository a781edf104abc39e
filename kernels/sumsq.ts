/**
 * Sum of squares over many tensors in one batch of dispatches (for the global gradient norm):
 * per-tensor partial sums, then one fixed-order final reduction. Deterministic: the workgroup count per
 * tensor depends only on its size, and the reduction tree is fixed.
 */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./sumsq.wgsl", import.meta.url)

/** At least this many elements (in loaded units) per invocation before another workgroup is used. */
const PER_INVOCATION = 16
/** llvmpipe runs 2 cores' worth of workgroups; a real GPU needs many more to reach its bandwidth. */
const MAX_GROUPS = { cpu: 64, gpu: 1024 } as const

/** Workgroups (= partial slots) for a tensor of `n` f32 values; depends only on n and the adapter. */
function groupsFor(n: number, maxGroups: number): { vec: boolean; items: number; groups: number } {
  const vec = n % 4 === 0
  const items = vec ? n / 4 : n
  return { vec, items, groups: Math.max(1, Math.min(maxGroups, Math.ceil(items / (64 * PER_INVOCATION)))) }
}

/** Records the reduction; returns a [1] tensor holding Σ x² over all `tensors` (the caller releases it). */
export function sumSquares(rt: GpuRuntime, tensors: readonly Tensor[]): Tensor {
  const plan = tensors.map((t) => groupsFor(numel(t.shape), MAX_GROUPS[rt.adapter.profile]))
  const slots = plan.reduce((a, p) => a + p.groups, 0)
  const partials = rt.tensor([Math.max(1, slots)])
  const result = rt.tensor([1])
  let slot = 0
  tensors.forEach((t, i) => {
    const p = plan[i]!
    const pipe = rt.pipeline("sumsq", src, p.vec ? "partial4" : "partial1")
    rt.dispatch(pipe, [t, partials], [p.groups], uniforms([["u32", p.items], ["u32", slot]]))
    slot += p.groups
  })
  // With no tensors there are no partials and `total` writes 0.
  rt.dispatch(rt.pipeline("sumsq", src, "total"), [partials, result], [1], uniforms([["u32", slots], ["u32", 0]]))
  rt.release(partials)
  return result
}

/** Σ x² over all `tensors`, read back (one number). */
export async function readSumSquares(rt: GpuRuntime, tensors: readonly Tensor[]): Promise<number> {
  const r = sumSquares(rt, tensors)
  const out = await rt.read(r)
  rt.release(r)
  return out[0]!
}
