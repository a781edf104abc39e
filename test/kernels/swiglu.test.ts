import { describe, expect, test } from "bun:test"
import { swiglu } from "../../kernels/swiglu.ts"
import { swigluRef } from "../../kernels/swiglu.ref.ts"
import { gpu } from "../gpu-shared.ts"

const rand = (n: number, seed: number, scale: number): Float32Array => {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale
  }
  return out
}

/** Error relative to max(|want|, 1e-3·|up|): f32 exp and divide give a few ulps. */
function maxRelErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let e = 0
  for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!) / Math.max(Math.abs(want[i]!), 1e-30))
  return e
}

describe("swiglu", () => {
  for (const [shape, scale] of [[[7, 36], 8], [[3, 131], 8], [[2, 1000], 30]] as const) {
    test(`swiglu ${shape.join("×")} |x| ≤ ${scale}`, async () => {
      const rt = await gpu()
      const n = shape[0] * shape[1]
      const g = rand(n, 11, scale), u = rand(n, 12, 3)
      const tg = rt.upload(g, shape), tu = rt.upload(u, shape)
      const out = swiglu(rt, tg, tu)
      expect(out.shape).toEqual([...shape])
      expect(maxRelErr(await rt.read(out), swigluRef(g, u))).toBeLessThan(2e-6)
      rt.release(tg, tu, out)
    })
  }

  test("large |x|: no overflow, silu(x) → x for x ≫ 0 and → 0⁻ for x ≪ 0", async () => {
    const rt = await gpu()
    const g = new Float32Array([1e4, -1e4, 3e38, -3e38, 88.8, -88.8, 100, -100, 0, -0, 1e-30, -20, 20])
    const u = new Float32Array(g.length).fill(1)
    const tg = rt.upload(g), tu = rt.upload(u)
    const out = await rt.read(swiglu(rt, tg, tu))
    const want = swigluRef(g, u)
    for (let i = 0; i < g.length; i++) {
      expect(Number.isFinite(out[i]!)).toBe(true)
      // Absolute floor: llvmpipe flushes denormals (silu(−88.8) ≈ −2.4e-37 needs exp(−88.8), a denormal).
      expect(Math.abs(out[i]! - want[i]!)).toBeLessThanOrEqual(Math.max(2e-6 * Math.abs(want[i]!), 1e-35))
    }
    rt.release(tg, tu)
  })
})
