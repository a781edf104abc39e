/**
 * The dispatch rmsnorm and layernorm share: x [..., D] normalised row by row, one workgroup per row
 * (grid-stride over rows), the vec4 entry point when D is a multiple of 4. `per` are the [D] parameter
 * tensors (weight, bias) bound after x; the output is bound last.
 */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"

export function normRows(rt: GpuRuntime, op: string, src: string, x: Tensor, per: Readonly<Record<string, Tensor>>, eps: number): Tensor {
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
  const groups = Math.max(1, Math.min(rows, rt.limits.maxComputeWorkgroupsPerDimension))
  rt.dispatch(rt.pipeline(op, src, vec ? "main4" : "main1"), [x, ...Object.values(per), out], [groups], params)
  return out
}
