/** RMSNorm over the last dimension (HF LlamaRMSNorm, in f32). */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"
import src from "./rmsnorm.wgsl" with { type: "text" }

/** Workgroups for one invocation per row, `wg` per workgroup, split over x and y past the per-dimension limit. */
export function rowGrid(rt: GpuRuntime, rows: number, wg: number): [number, number] {
  const groups = Math.max(1, Math.ceil(rows / wg))
  const gx = Math.min(groups, rt.limits.maxComputeWorkgroupsPerDimension)
  return [gx, Math.ceil(groups / gx)]
}

/** x [..., D], w [D] → y [..., D]. */
export function rmsnorm(rt: GpuRuntime, x: Tensor, w: Tensor, eps: number): Tensor {
  const D = x.shape[x.shape.length - 1]
  if (D === undefined || D < 1) throw new Error("rmsnorm: x needs a last dimension")
  expectShape("rmsnorm", "w", w, [D])
  const rows = numel(x.shape) / D
  const vec = D % 4 === 0
  const out = rt.tensor(x.shape)
  const params = uniforms([
    ["u32", rows],
    ["u32", vec ? D / 4 : D],
    ["u32", D],
    ["f32", eps],
  ])
  rt.dispatch(rt.pipeline("rmsnorm", src, vec ? "main4" : "main1"), [x, w, out], rowGrid(rt, rows, 64), params)
  return out
}
