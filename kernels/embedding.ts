/** Token embedding lookup. */
import { strideGroups } from "./add.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, shapeString } from "./tensor.ts"
import src from "./embedding.wgsl" with { type: "text" }

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b))

/**
 * table [V, D] f32, ids u32 [T] → [T, D]. Ids ≥ V give zero rows. `maxBindingBytes` (default: the
 * device's storage binding limit) splits a large table into row ranges bound at offsets.
 */
export function embed(rt: GpuRuntime, table: Tensor, ids: Tensor, options: { readonly maxBindingBytes?: number } = {}): Tensor {
  const [V, D] = table.shape
  if (table.shape.length !== 2 || V === undefined || D === undefined || V < 1 || D < 1) throw new Error(`embed: table has shape ${shapeString(table.shape)}, expected [V, D]`)
  if (ids.shape.length !== 1) throw new Error(`embed: ids has shape ${shapeString(ids.shape)}, expected [T]`)
  if (ids.dtype !== "u32") throw new Error(`embed: ids must be u32, got ${ids.dtype}`)
  const T = ids.shape[0]!
  const out = rt.tensor([T, D])
  const vec = D % 4 === 0
  const cols = vec ? D / 4 : D
  const rowBytes = D * 4
  // Chunk starts must sit on the storage offset alignment (256 on most adapters).
  const align = rt.limits.minStorageBufferOffsetAlignment
  const rowStep = align / gcd(rowBytes, align)
  const maxBytes = Math.min(options.maxBindingBytes ?? Infinity, rt.limits.maxStorageBufferBindingSize)
  let rowsPerChunk = Math.floor(maxBytes / rowBytes / rowStep) * rowStep
  if (rowsPerChunk < 1) throw new Error(`embed: one aligned group of ${rowStep} rows of ${rowBytes} bytes exceeds the ${maxBytes}-byte binding limit`)
  rowsPerChunk = Math.min(rowsPerChunk, V)
  const pipe = rt.pipeline("embedding", src, vec ? "main4" : "main1")
  const blocks = Math.ceil(cols / 8) // BLOCK in embedding.wgsl
  const n = T * blocks
  for (let start = 0; start < V; start += rowsPerChunk) {
    const end = Math.min(V, start + rowsPerChunk)
    const params = uniforms([
      ["u32", n],
      ["u32", cols],
      ["u32", blocks],
      ["u32", start],
      ["u32", end],
      ["u32", V],
      ["u32", end === V ? 1 : 0],
    ])
    const binding = { buffer: table.buffer, offset: start * rowBytes, size: (end - start) * rowBytes }
    rt.dispatch(pipe, [ids, binding, out], [strideGroups(rt, n, 64)], params)
  }
  return out
}
