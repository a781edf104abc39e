/** RMSNorm backward (HF LlamaRMSNorm in f32): dx and dw from x, w, eps and dy. */
import { rowGrid } from "./row-norm.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./rmsnorm-backward.wgsl", import.meta.url)

/** Element-type prelude for templates written over `VT`: vec4 when the row length allows, else scalar. */
export const vtPrelude = (vec: boolean): string =>
  vec
    ? "alias VT = vec4f;\nfn hsum(v: VT) -> f32 { return (v.x + v.y) + (v.z + v.w); }\n"
    : "alias VT = f32;\nfn hsum(v: VT) -> f32 { return v; }\n"

const CHUNK = 32 // rows per dw partial sum; must match rmsnorm-backward.wgsl
const WG = 64

/** x [..., D], w [D], dy like x → dx like x, dw [D] (dw summed over all rows in a fixed order). */
export function rmsnormBackward(rt: GpuRuntime, x: Tensor, w: Tensor, dy: Tensor, eps: number): { dx: Tensor; dw: Tensor } {
  const D = x.shape[x.shape.length - 1]
  if (D === undefined || D < 1) throw new Error("rmsnormBackward: x needs a last dimension")
  expectShape("rmsnormBackward", "w", w, [D])
  expectShape("rmsnormBackward", "dy", dy, x.shape)
  const rows = numel(x.shape) / D
  const vec = D % 4 === 0
  const cols = vec ? D / 4 : D
  const chunks = Math.max(1, Math.ceil(rows / CHUNK))
  const code = vtPrelude(vec) + src
  const label = `rmsnorm-backward-${vec ? 4 : 1}`
  const dx = rt.tensor(x.shape)
  const dw = rt.tensor([D])
  if (rows === 0) return { dx, dw } // (dw left uninitialised: no rows, nothing to train)
  const rinv = rt.tensor([rows])
  const partial = rt.tensor([chunks, D])
  const params = uniforms([
    ["u32", rows],
    ["u32", cols],
    ["u32", D],
    ["f32", eps],
    ["u32", chunks],
  ])
  const maxGroups = rt.limits.maxComputeWorkgroupsPerDimension
  if (chunks > maxGroups) throw new Error(`rmsnormBackward: ${rows} rows exceed ${maxGroups * CHUNK}`)
  rt.dispatch(rt.pipeline(label, code, "rowGrad"), [x, w, dy, dx, rinv], rowGrid(rt, rows, WG), params)
  rt.dispatch(rt.pipeline(label, code, "dwPartial"), [x, dy, rinv, partial], [Math.ceil(cols / WG), chunks], params)
  rt.dispatch(rt.pipeline(label, code, "dwReduce"), [partial, dw], [Math.ceil(cols / WG)], params)
  rt.release(rinv, partial)
  return { dx, dw }
}
