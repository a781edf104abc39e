/** Float64 references for pack16: direct float64 → 16-bit rounding (nearest-even; no f32 step), exact unpacking. */
import { toBf16Bits, toF16Bits } from "../common/safetensors.ts"
import type { Half } from "./pack16.ts"

/** The u32 words packHalf writes for `values` (element 2i in the low half). */
export function packHalfRef(values: ArrayLike<number>, dtype: Half): Uint32Array {
  const enc = dtype === "f16" ? toF16Bits : toBf16Bits
  const out = new Uint32Array(values.length / 2)
  for (let i = 0; i < out.length; i++) out[i] = (enc(values[2 * i]!) | (enc(values[2 * i + 1]!) << 16)) >>> 0
  return out
}

/** The values of 16-bit words, in float64. */
export function unpackHalfRef(words: Uint32Array, dtype: Half): Float64Array {
  const out = new Float64Array(words.length * 2)
  const dec = (h: number): number => {
    if (dtype === "bf16") return new Float32Array(new Uint32Array([h << 16]).buffer)[0]!
    const sign = h & 0x8000 ? -1 : 1
    const exp = (h >>> 10) & 0x1f
    const frac = h & 0x3ff
    return exp === 0 ? sign * frac * 2 ** -24 : exp === 31 ? (frac === 0 ? sign * Infinity : NaN) : sign * (1 + frac / 1024) * 2 ** (exp - 15)
  }
  for (let i = 0; i < words.length; i++) {
    out[2 * i] = dec(words[i]! & 0xffff)
    out[2 * i + 1] = dec(words[i]! >>> 16)
  }
  return out
}
