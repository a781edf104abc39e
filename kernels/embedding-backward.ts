/** Embedding backward: scatter-add of output-row gradients into the table gradient, deterministic. */
import { tableRowChunks } from "./embedding.ts"
import { vtPrelude } from "./rmsnorm-backward.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, shapeString } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./embedding-backward.wgsl", import.meta.url)

/** Columns (VT units) per scatter invocation. */
const BLOCK = 16

export interface EmbeddingBackwardOptions {
  readonly maxBindingBytes?: number
  /**
   * "links": per-token chains, O(T²) id reads; "rows": per table row scans, O(V·T·D/(4·16)) id reads.
   * Default: whichever reads fewer ids. Both give identical bits.
   */
  readonly method?: "links" | "rows"
}

/**
 * dTable [V, D] += rows of dOut [T, D] by ids (u32 [T]); repeated ids accumulate in token order, ids ≥ V
 * are skipped. `maxBindingBytes` (default: the device's storage binding limit) splits a large table into
 * row ranges bound at offsets, as the forward does.
 */
export function embeddingBackward(
  rt: GpuRuntime,
  dTable: Tensor,
  ids: Tensor,
  dOut: Tensor,
  options: EmbeddingBackwardOptions = {},
): void {
  const [V, D] = dTable.shape
  if (dTable.shape.length !== 2 || V === undefined || D === undefined || V < 1 || D < 1) {
    throw new Error(`embeddingBackward: dTable has shape ${shapeString(dTable.shape)}, expected [V, D]`)
  }
  if (ids.shape.length !== 1 || ids.dtype !== "u32") throw new Error(`embeddingBackward: ids must be u32 [T], got ${ids.dtype} ${shapeString(ids.shape)}`)
  const T = ids.shape[0]!
  expectShape("embeddingBackward", "dOut", dOut, [T, D])
  if (T === 0) return
  const vec = D % 4 === 0
  const cols = vec ? D / 4 : D
  const chunks = tableRowChunks(rt, "embeddingBackward", dTable, V, D, options.maxBindingBytes)
  const code = vtPrelude(vec) + src
  const label = `embedding-backward-${vec ? 4 : 1}`
  const groups = Math.ceil(T / 64)
  if (groups > rt.limits.maxComputeWorkgroupsPerDimension) throw new Error(`embeddingBackward: ${T} tokens exceed ${64 * rt.limits.maxComputeWorkgroupsPerDimension}`)
  const params = (start: number, end: number): Uint32Array =>
    uniforms([
      ["u32", T],
      ["u32", cols],
      ["u32", start],
      ["u32", end],
      ["u32", BLOCK],
    ])
  const blocks = Math.ceil(cols / BLOCK)
  const method = options.method ?? (V * blocks < T ? "rows" : "links")
  if (method === "rows") {
    const pipe = rt.pipeline(label, code, "rows")
    for (const { start, end, binding } of chunks) {
      rt.dispatch(pipe, [ids, dOut, binding], [Math.ceil((end - start) / 64), blocks], params(start, end))
    }
    return
  }
  const chain = rt.tensor([2 * T], "u32")
  rt.dispatch(rt.pipeline(label, code, "links"), [ids, chain], [groups], params(0, V))
  const scatter = rt.pipeline(label, code, "scatter")
  for (const { start, end, binding } of chunks) {
    rt.dispatch(scatter, [ids, chain, dOut, binding], [groups, blocks], params(start, end))
  }
  rt.release(chain)
}
