/**
 * f32 ↔ 16-bit floats packed two to a u32 (pack16.wgsl): writing rows into 16-bit KV cache pages and
 * reading them back. Offsets are in u32 words (pairs of values), so rows land anywhere in a page.
 */
import { strideGroups } from "./add.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Half, type HalfTensor, type Tensor, numel } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./pack16.wgsl", import.meta.url)

export type { Half }

/** 16-bit values (their bits, as a file stores them) uploaded as a HalfTensor of `shape`. */
export function uploadHalf(rt: GpuRuntime, bits: Uint16Array, shape: readonly number[], dtype: Half): HalfTensor {
  if (numel(shape) !== bits.length) throw new Error(`uploadHalf: ${bits.length} values do not fill shape [${shape.join("×")}]`)
  const buffer = rt.allocBuffer(bits.byteLength)
  // queue writes take whole words: an odd count goes with one zero half after it
  const data = bits.length % 2 === 0 ? bits : Uint16Array.from({ length: bits.length + 1 }, (_, i) => bits[i] ?? 0)
  rt.write(buffer, data)
  return { buffer, shape: [...shape], dtype }
}

function check(op: string, values: number): number {
  if (!Number.isInteger(values) || values < 0 || values % 2 !== 0) throw new Error(`${op}: ${values} values; 16-bit packing takes an even count`)
  return values / 2
}

/** dst[dstWord + i] = the pair (src[2(srcWord + i)], src[2(srcWord + i) + 1]) as `dtype`, for `values`/2 words. */
export function packHalf(rt: GpuRuntime, source: Tensor, dst: GPUBuffer, dtype: Half, o: { readonly values: number; readonly srcWord?: number; readonly dstWord?: number }): void {
  const pairs = check("packHalf", o.values)
  if (pairs === 0) return
  const u = uniforms([["u32", pairs], ["u32", o.srcWord ?? 0], ["u32", o.dstWord ?? 0], ["u32", 0]])
  rt.dispatch(rt.pipeline("pack16", src, `pack_${dtype}`), [source, dst], [strideGroups(rt, pairs, 64)], u)
}

/** The values of `values`/2 words of `source` from `srcWord`, as f32, into `dst` from value 2·dstWord (a new [values] tensor by default). */
export function unpackHalf(rt: GpuRuntime, source: GPUBuffer, dtype: Half, o: { readonly values: number; readonly srcWord?: number; readonly dst?: Tensor; readonly dstWord?: number }): Tensor {
  const pairs = check("unpackHalf", o.values)
  const dst = o.dst ?? rt.tensor([o.values])
  if (o.dst !== undefined && numel(o.dst.shape) < 2 * ((o.dstWord ?? 0) + pairs)) throw new Error(`unpackHalf: ${o.values} values from word ${o.dstWord ?? 0} overrun a ${numel(o.dst.shape)}-value tensor`)
  if (pairs === 0) return dst
  const u = uniforms([["u32", pairs], ["u32", o.srcWord ?? 0], ["u32", o.dstWord ?? 0], ["u32", 0]])
  rt.dispatch(rt.pipeline("pack16", src, `unpack_${dtype}`), [source, dst], [strideGroups(rt, pairs, 64)], u)
  return dst
}
