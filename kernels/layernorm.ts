/** LayerNorm with bias over the last dimension (torch.nn.LayerNorm, GPT-NeoX's norms), in f32. */
import { normRows } from "./row-norm.ts"
import type { GpuRuntime } from "./runtime.ts"
import type { Tensor } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const body = wgsl("./layernorm.wgsl", import.meta.url)
const workgroupSum = wgsl("./workgroup-sum.wgsl", import.meta.url)
const src = `${workgroupSum}\n${body}`

/** x [..., D], w [D], b [D] → y [..., D]. */
export function layernorm(rt: GpuRuntime, x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
  return normRows(rt, "layernorm", src, x, { w, b }, eps)
}
