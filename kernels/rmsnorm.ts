/** RMSNorm over the last dimension (HF LlamaRMSNorm in f32). */
import { normRows } from "./row-norm.ts"
import type { GpuRuntime } from "./runtime.ts"
import type { Tensor } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./rmsnorm.wgsl", import.meta.url)

/** x [..., D], w [D] → y [..., D]. */
export function rmsnorm(rt: GpuRuntime, x: Tensor, w: Tensor, eps: number): Tensor {
  return normRows(rt, "rmsnorm", src, x, { w }, eps, "invocation")
}
