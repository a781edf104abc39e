/**
 * Table cases of pack16: f32 → f16 / bf16 words compared bit for bit with direct float64 rounding (ties,
 * f16 subnormals and overflow, signed zeros included), written at word offsets as into a KV page; and
 * words → f32, exact.
 */
import { type Half, packHalf, unpackHalf } from "../../pack16.ts"
import { packHalfRef, unpackHalfRef } from "../../pack16.ref.ts"
import { type KernelCase, type KernelOp, SINGLE, launcher, once } from "../kernel-case.ts"
import { rand } from "../random.ts"

/** Random values with the hard ones mixed in: f16 ties and subnormals, overflow, ±0, bf16 ties. */
function values(n: number, seed: number, scale: number): Float32Array {
  const v = rand(n, seed, scale)
  const hard = [0, -0, 65504, 65520, 65519.99, -70000, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 2 ** -14 - 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 6.1e-5, -1e-8]
  hard.forEach((x, i) => (v[(i * 37) % n] = x))
  return v
}

function packCase(dtype: Half, n: number, srcWord: number, dstWord: number, scale: number): KernelCase {
  const x = once(() => values(n + 2 * srcWord, n + 3, scale))
  const words = n / 2
  return {
    name: `pack ${dtype}: ${n} values from word ${srcWord} to word ${dstWord} (|x| ≤ ${scale})`,
    dtype: "u32",
    deterministic: true,
    setup(rt) {
      const t = rt.upload(x())
      const dst = rt.tensor([dstWord + words], "u32")
      return launcher(rt, [t], () => {
        packHalf(rt, t, dst.buffer, dtype, { values: n, srcWord, dstWord })
        return { words: dst }
      }, { view: (got) => ({ words: new Uint32Array(got.words!.buffer).subarray(dstWord) }) })
    },
    expected: once(() => ({ words: { want: packHalfRef(x().subarray(2 * srcWord), dtype), tol: {} } })),
  }
}

function unpackCase(dtype: Half, words: number, srcWord: number): KernelCase {
  // every 16-bit pattern but infinities and NaNs (exponent all ones)
  const w = once(() => {
    const out = new Uint32Array(words + srcWord)
    let s = words + 11
    const half = (): number => {
      for (;;) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0
        const h = s >>> 16
        if (dtype === "f16" ? (h & 0x7c00) !== 0x7c00 : (h & 0x7f80) !== 0x7f80) return h
      }
    }
    for (let i = 0; i < out.length; i++) out[i] = (half() | (half() << 16)) >>> 0
    return out
  })
  return {
    name: `unpack ${dtype}: ${words} words from word ${srcWord}`,
    dtype: "f32",
    setup(rt) {
      const t = rt.upload(w(), [w().length])
      return launcher(rt, [t], () => ({ values: unpackHalf(rt, t.buffer, dtype, { values: 2 * words, srcWord }) }))
    },
    expected: once(() => ({ values: { want: unpackHalfRef(w().subarray(srcWord), dtype), tol: {} } })),
  }
}

export const pack16Op: KernelOp = {
  op: "pack16",
  variants: () => SINGLE,
  cases: () => [
    packCase("f16", 1000, 0, 0, 4),
    packCase("f16", 4096, 37, 1000, 70000),
    packCase("bf16", 1000, 0, 0, 4),
    packCase("bf16", 4096, 37, 1000, 1e30),
    unpackCase("f16", 3001, 5),
    unpackCase("bf16", 3001, 5),
  ],
}
