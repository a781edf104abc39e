/** SwiGLU backward: dgate and dup from gate, up and the output gradient. */
import { strideGroups } from "./add.ts"
import { vtPrelude } from "./rmsnorm-backward.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./swiglu-backward.wgsl", import.meta.url)

export function swigluBackward(rt: GpuRuntime, gate: Tensor, up: Tensor, dOut: Tensor): { dgate: Tensor; dup: Tensor } {
  expectShape("swigluBackward", "up", up, gate.shape)
  expectShape("swigluBackward", "dOut", dOut, gate.shape)
  const n = numel(gate.shape)
  const vec = n % 4 === 0
  const items = vec ? n / 4 : n
  const dgate = rt.tensor(gate.shape)
  const dup = rt.tensor(gate.shape)
  const pipe = rt.pipeline(`swiglu-backward-${vec ? 4 : 1}`, vtPrelude(vec) + src)
  rt.dispatch(pipe, [gate, up, dOut, dgate, dup], [strideGroups(rt, items, 64)], uniforms([["u32", items]]))
  return { dgate, dup }
}
