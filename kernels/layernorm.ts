/** LayerNorm with bias over the last dimension (torch.nn.LayerNorm, GPT-NeoX's norms), in f32. */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"
import src from "./layernorm.wgsl" with { type: "text" }

/** x [..., D], w [D], b [D] → y [..., D]. */
export function layernorm(rt: GpuRuntime, x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
  const D = x.shape[x.shape.length - 1]
  if (D === undefined || D < 1) throw new Error("layernorm: x needs a last dimension")
  expectShape("layernorm", "w", w, [D])
  expectShape("layernorm", "b", b, [D])
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
  rt.dispatch(rt.pipeline("layernorm", src, vec ? "main4" : "main1"), [x, w, b, out], [groups], params)
  return out
}
