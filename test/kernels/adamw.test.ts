import { describe, expect, test } from "bun:test"
import { ADAMW_DEFAULTS, type AdamWHyper, adamwStep, adamwUniforms } from "../../kernels/adamw.ts"
import { adamwRef } from "../../kernels/adamw.ref.ts"
import { Rng } from "../../common/rng.ts"
import { gpu } from "../gpu-shared.ts"

const randn = (rng: Rng, n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => (rng.float() * 2 - 1) * scale)

const maxErr = (got: ArrayLike<number>, want: ArrayLike<number>): number => {
  let e = 0
  for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!))
  return e
}
const maxRel = (got: ArrayLike<number>, want: ArrayLike<number>, floor: number): number => {
  let e = 0
  for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!) / Math.max(Math.abs(want[i]!), floor))
  return e
}

describe("adamw", () => {
  test("one step by hand: the first Adam step moves each weight by lr·sign(g), after decay", async () => {
    const rt = await gpu()
    const h: AdamWHyper = { ...ADAMW_DEFAULTS, weightDecay: 0.01 }
    const p = rt.upload(Float32Array.of(1, -2, 0.5, 3, 7))
    const g = rt.upload(Float32Array.of(0.5, -2, 0, 4, 1e-3))
    const m = rt.upload(new Float32Array(5)), v = rt.upload(new Float32Array(5))
    // t = 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + eps); decay multiplies p by 1 − 0.1·0.01.
    adamwStep(rt, p, g, m, v, adamwUniforms(h, 0.1, 1, 1))
    // 7·0.999 − 0.1·1e-3/(1e-3 + 1e-8): eps shows at |g| = 1e-3 (a 1e-5 relative change of the update).
    const want = [0.899, -1.898, 0.4995, 2.897, 6.993 - 0.1 * (1e-3 / (1e-3 + 1e-8))]
    expect(maxErr(await rt.read(p), want)).toBeLessThan(1e-6)
    expect(maxErr(await rt.read(m), [0.05, -0.2, 0, 0.4, 1e-4])).toBeLessThan(1e-8)
    expect(maxRel(await rt.read(v), [0.00025, 0.004, 0, 0.016, 1e-9], 1e-12)).toBeLessThan(1e-6)
    // Second step by hand on element 0 with g = 0.5 again and a clip coefficient of 0.5 (g → 0.25):
    // m = 0.9·0.05 + 0.1·0.25 = 0.07, v = 0.999·0.00025 + 0.001·0.0625 = 0.00031225,
    // p = 0.899·0.999 − 0.1·(0.07/0.19)/(sqrt(0.00031225/0.001999) + 1e-8).
    adamwStep(rt, p, g, m, v, adamwUniforms(h, 0.1, 2, 0.5))
    const p2 = 0.899 * 0.999 - 0.1 * (0.07 / 0.19) / (Math.sqrt(0.00031225 / 0.001999) + 1e-8)
    expect(Math.abs((await rt.read(p))[0]! - p2)).toBeLessThan(1e-6)
    rt.release(p, g, m, v)
  })

  // 1000 takes the vec4 path, 1001 the scalar one; 70001 needs more than one stride of some invocations.
  for (const n of [1000, 1001, 70001]) {
    test(`10 steps against the float64 reference, n = ${n}`, async () => {
      const rt = await gpu()
      const rng = Rng.seeded(7, n)
      const h: AdamWHyper = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 }
      const p0 = randn(rng, n)
      const ref = { p: Float64Array.from(p0), m: new Float64Array(n), v: new Float64Array(n) }
      const p = rt.upload(p0), m = rt.upload(new Float32Array(n)), v = rt.upload(new Float32Array(n))
      const g = rt.tensor([n])
      for (let t = 1; t <= 10; t++) {
        const grad = randn(rng, n, t % 3 === 0 ? 10 : 0.1)
        const clip = t % 2 === 0 ? 0.37 : 1
        const lr = 1e-2 * (1 - t / 20)
        rt.write(g, grad)
        adamwStep(rt, p, g, m, v, adamwUniforms(h, lr, t, clip))
        adamwRef(ref, grad, h, lr, t, clip)
      }
      // f32 state rounded each step: |p| ≤ ~1.1, so ~10 roundings of ≤ 6e-8 plus the update's own error
      // (a few ulp of lr·|m̂/√v̂| ≤ ~1e-2) stay below 1e-6. Moments (|m| ≲ 1, v ≲ 5): a few ulp of their
      // scale, as absolute errors since m cancels towards 0.
      const [gp, gm, gv] = [await rt.read(p), await rt.read(m), await rt.read(v)]
      expect(maxErr(gp, ref.p)).toBeLessThan(1e-6)
      expect(maxErr(gm, ref.m)).toBeLessThan(1e-6)
      expect(maxRel(gv, ref.v, 1e-2)).toBeLessThan(1e-6)
      rt.release(p, m, v, g)
    })
  }

  test("shape mismatch throws; step must be ≥ 1", async () => {
    const rt = await gpu()
    const a = rt.tensor([8]), b = rt.tensor([4])
    expect(() => adamwStep(rt, a, b, a, a, adamwUniforms(ADAMW_DEFAULTS, 1e-3, 1, 1))).toThrow(/adamw: grad has shape/)
    expect(() => adamwUniforms(ADAMW_DEFAULTS, 1e-3, 0, 1)).toThrow(/positive integer/)
    rt.release(a, b)
  })
})
