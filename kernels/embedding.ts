/** Token embedding lookup. */
import { strideGroups } from "./add.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, shapeString } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./embedding.wgsl", import.meta.url)

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b))

/** One row range [start, end) of a [V, D] f32 table and its binding at an aligned offset. */
export interface TableChunk {
  readonly start: number
  readonly end: number
  readonly binding: { readonly buffer: GPUBuffer; readonly offset: number; readonly size: number }
}

/**
 * Splits the rows of `table` [V, D] f32 into ranges whose bindings fit `maxBindingBytes` (and the
 * device's storage binding limit) and start on the storage offset alignment (256 on most adapters).
 */
export function tableRowChunks(rt: GpuRuntime, op: string, table: Tensor, V: number, D: number, maxBindingBytes?: number): TableChunk[] {
  const rowBytes = D * 4
  const align = rt.limits.minStorageBufferOffsetAlignment
  const rowStep = align / gcd(rowBytes, align)
  const maxBytes = Math.min(maxBindingBytes ?? Infinity, rt.limits.maxStorageBufferBindingSize)
  let rowsPerChunk = Math.floor(maxBytes / rowBytes / rowStep) * rowStep
  if (rowsPerChunk < 1) throw new Error(`${op}: one aligned group of ${rowStep} rows of ${rowBytes} bytes exceeds the ${maxBytes}-byte binding limit`)
  rowsPerChunk = Math.min(rowsPerChunk, V)
  const chunks: TableChunk[] = []
  for (let start = 0; start < V; start += rowsPerChunk) {
    const end = Math.min(V, start + rowsPerChunk)
    chunks.push({ start, end, binding: { buffer: table.buffer, offset: start * rowBytes, size: (end - start) * rowBytes } })
  }
  return chunks
}

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
  const chunks = tableRowChunks(rt, "embed", table, V, D, options.maxBindingBytes)
  const pipe = rt.pipeline("embedding", src, vec ? "main4" : "main1")
  const blocks = Math.ceil(cols / 8) // BLOCK in embedding.wgsl
  const n = T * blocks
  for (const { start, end, binding } of chunks) {
    const params = uniforms([
      ["u32", n],
      ["u32", cols],
      ["u32", blocks],
      ["u32", start],
      ["u32", end],
      ["u32", V],
      ["u32", end === V ? 1 : 0],
    ])
    rt.dispatch(pipe, [ids, binding, out], [strideGroups(rt, n, 64)], params)
  }
  return out
}
