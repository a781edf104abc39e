/** Elementwise addition: `add` (a new tensor) and `addInPlace` (a += b, for residual streams). */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./add.wgsl", import.meta.url)

/** Workgroups for a grid-stride loop over `items` with `wgSize` invocations per workgroup. */
export function strideGroups(rt: GpuRuntime, items: number, wgSize: number): number {
  return Math.max(1, Math.min(Math.ceil(items / wgSize), rt.limits.maxComputeWorkgroupsPerDimension))
}

function run(rt: GpuRuntime, entry: "add" | "addInPlace", bindings: readonly Tensor[], n: number): void {
  const vec = n % 4 === 0
  const items = vec ? n / 4 : n
  const pipe = rt.pipeline("add", src, `${entry}${vec ? 4 : 1}`)
  rt.dispatch(pipe, bindings, [strideGroups(rt, items, 64)], uniforms([["u32", items]]))
}

export function add(rt: GpuRuntime, a: Tensor, b: Tensor): Tensor {
  expectShape("add", "b", b, a.shape)
  const out = rt.tensor(a.shape)
  run(rt, "add", [a, b, out], numel(a.shape))
  return out
}

/** a += b. */
export function addInPlace(rt: GpuRuntime, a: Tensor, b: Tensor): void {
  expectShape("addInPlace", "b", b, a.shape)
  if (a.buffer === b.buffer) throw new Error("addInPlace: a and b must be different buffers")
  run(rt, "addInPlace", [a, b], numel(a.shape))
}
