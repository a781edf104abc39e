/** GELU (exact, erf form: torch's default and GPT-NeoX's MLP activation), elementwise. */
import { strideGroups } from "./add.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./gelu.wgsl", import.meta.url)

export function gelu(rt: GpuRuntime, x: Tensor): Tensor {
  const n = numel(x.shape)
  const vec = n % 4 === 0
  const items = vec ? n / 4 : n
  const out = rt.tensor(x.shape)
  rt.dispatch(rt.pipeline("gelu", src, vec ? "main4" : "main1"), [x, out], [strideGroups(rt, items, 64)], uniforms([["u32", items]]))
  return out
}
