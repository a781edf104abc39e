/** SwiGLU, LLaMA's MLP activation: silu(gate) ⊙ up. */
import { strideGroups } from "./add.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./swiglu.wgsl", import.meta.url)

export function swiglu(rt: GpuRuntime, gate: Tensor, up: Tensor): Tensor {
  expectShape("swiglu", "up", up, gate.shape)
  const n = numel(gate.shape)
  const vec = n % 4 === 0
  const items = vec ? n / 4 : n
  const out = rt.tensor(gate.shape)
  rt.dispatch(rt.pipeline("swiglu", src, vec ? "main4" : "main1"), [gate, up, out], [strideGroups(rt, items, 64)], uniforms([["u32", items]]))
  return out
}
