/**
 * Token embedding lookup from an f32 table or a 16-bit one (the weights' file dtype, widened exactly), or
 * from a linear layer's prepared weight (a head tied to the embeddings, so the table is held once).
 */
import { strideGroups } from "./add.ts"
import type { Weight } from "./matmul.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type HalfTensor, type Tensor, shapeString } from "./tensor.ts"
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
export function tableRowChunks(rt: GpuRuntime, op: string, table: Tensor | HalfTensor, V: number, D: number, maxBindingBytes?: number): TableChunk[] {
  const rowBytes = D * (table.dtype === "f16" || table.dtype === "bf16" ? 2 : 4)
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
 * table [V, D] (f32, or f16 / bf16 with D even), ids u32 [T] → [T, D] f32. Ids ≥ V give zero rows.
 * `maxBindingBytes` (default: the device's storage binding limit) splits a large table into row ranges
 * bound at offsets.
 */
export function embed(rt: GpuRuntime, table: Tensor | HalfTensor, ids: Tensor, options: { readonly maxBindingBytes?: number } = {}): Tensor {
  const [V, D] = table.shape
  if (table.shape.length !== 2 || V === undefined || D === undefined || V < 1 || D < 1) throw new Error(`embed: table has shape ${shapeString(table.shape)}, expected [V, D]`)
  if (ids.shape.length !== 1) throw new Error(`embed: ids has shape ${shapeString(ids.shape)}, expected [T]`)
  if (ids.dtype !== "u32") throw new Error(`embed: ids must be u32, got ${ids.dtype}`)
  const half = table.dtype === "f16" || table.dtype === "bf16"
  if (half && D % 2 !== 0) throw new Error(`embed: a 16-bit table needs an even width, got D ${D}`)
  const T = ids.shape[0]!
  const out = rt.tensor([T, D])
  const vec = !half && D % 4 === 0
  // words of two values (16-bit), vec4s or f32s per row
  const cols = half ? D / 2 : vec ? D / 4 : D
  const chunks = tableRowChunks(rt, "embed", table, V, D, options.maxBindingBytes)
  const pipe = rt.pipeline("embedding", src, half ? `main_${table.dtype}` : vec ? "main4" : "main1")
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

/**
 * The rows of a prepared weight W [V, D] (`prepareWeight` / `prepareWeight16`, texture or buffer, in parts
 * or whole): ids u32 [T] → [T, D] f32, the same bits `embed` gives from the table W itself; ids ≥ V give
 * zero rows. A model whose head is tied to its embeddings looks tokens up here instead of keeping a copy.
 */
export function embedFromWeight(rt: GpuRuntime, w: Weight, ids: Tensor): Tensor {
  const [V, D] = w.shape
  if (ids.shape.length !== 1) throw new Error(`embedFromWeight: ids has shape ${shapeString(ids.shape)}, expected [T]`)
  if (ids.dtype !== "u32") throw new Error(`embedFromWeight: ids must be u32, got ${ids.dtype}`)
  const T = ids.shape[0]!
  const out = rt.tensor([T, D])
  const entry =
    w.storage === "texture" ? (w.dtype === "bf16" ? "weight_texture_bf16" : "weight_texture4") : `weight_buffer_${w.dtype}`
  const pipe = rt.pipeline("embedding", src, entry)
  const blocks = Math.ceil(D / 8) // BLOCK in embedding.wgsl
  const n = T * blocks
  w.parts.forEach((part, i) => {
    const table = part.view ?? part.tensor
    if (table === undefined) throw new Error(`embedFromWeight: part ${i} of the ${V}×${D} weight holds neither a texture nor a buffer`)
    const params = uniforms([
      ["u32", n],
      ["u32", D],
      ["u32", blocks],
      ["u32", part.n0],
      ["u32", part.n0 + part.cols],
      ["u32", V],
      ["u32", i === w.parts.length - 1 ? 1 : 0],
      ["u32", part.c4 * 4],
    ])
    rt.dispatch(pipe, [ids, table, out], [strideGroups(rt, n, 64)], params)
  })
  return out
}
