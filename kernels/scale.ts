/** In-place elementwise helpers: scale (x *= s), axpy (x += s·y), fill (x = s). */
import { strideGroups } from "./add.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./scale.wgsl", import.meta.url)

function run(rt: GpuRuntime, entry: "scale" | "axpy" | "fill", bindings: readonly Tensor[], s: number): void {
  const n = numel(bindings[0]!.shape)
  const vec = n % 4 === 0
  const items = vec ? n / 4 : n
  rt.dispatch(rt.pipeline("scale", src, `${entry}${vec ? 4 : 1}`), bindings, [strideGroups(rt, items, 64)], uniforms([["u32", items], ["f32", s]]))
}

/** x *= s. */
export function scaleInPlace(rt: GpuRuntime, x: Tensor, s: number): void {
  run(rt, "scale", [x], s)
}

/** x += s·y (x and y must be different buffers). */
export function axpyInPlace(rt: GpuRuntime, x: Tensor, y: Tensor, s: number): void {
  expectShape("axpy", "y", y, x.shape)
  if (x.buffer === y.buffer) throw new Error("axpy: x and y must be different buffers")
  run(rt, "axpy", [x, y], s)
}

/** x = s everywhere (zeroing gradients: scaling by 0 would keep NaN and Inf). */
export function fill(rt: GpuRuntime, x: Tensor, s: number): void {
  run(rt, "fill", [x], s)
}
