/**
 * The dispatch rmsnorm and layernorm share: x [..., D] normalised row by row, the vec4 entry point when D
 * is a multiple of 4. `per` are the [D] parameter tensors (weight, bias) bound after x; the output is bound
 * last. `rowsPer` says how the kernel maps rows: one workgroup per row (grid-stride over rows, a workgroup
 * sum) or one invocation per row (64 per workgroup, the grid from rowGrid).
 */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"

/** Workgroups for one invocation per row, `wg` per workgroup, split over x and y past the per-dimension limit. */
export function rowGrid(rt: GpuRuntime, rows: number, wg: number): [number, number] {
  const groups = Math.max(1, Math.ceil(rows / wg))
  const gx = Math.min(groups, rt.limits.maxComputeWorkgroupsPerDimension)
  return [gx, Math.ceil(groups / gx)]
}

export function normRows(
  rt: GpuRuntime,
  op: string,
  src: string,
  x: Tensor,
  per: Readonly<Record<string, Tensor>>,
  eps: number,
  rowsPer: "workgroup" | "invocation" = "workgroup",
): Tensor {
  const D = x.shape[x.shape.length - 1]
  if (D === undefined || D < 1) throw new Error(`${op}: x needs a last dimension`)
  for (const [name, t] of Object.entries(per)) expectShape(op, name, t, [D])
  const rows = numel(x.shape) / D
  const vec = D % 4 === 0
  const out = rt.tensor(x.shape)
  const params = uniforms([
    ["u32", rows],
    ["u32", vec ? D / 4 : D],
    ["u32", D],
    ["f32", eps],
  ])
  const grid = rowsPer === "invocation" ? rowGrid(rt, rows, 64) : ([Math.max(1, Math.min(rows, rt.limits.maxComputeWorkgroupsPerDimension)), 1] as const)
  rt.dispatch(rt.pipeline(op, src, vec ? "main4" : "main1"), [x, ...Object.values(per), out], grid, params)
  return out
}
