import { describe, expect, test } from "bun:test"
import { axpyInPlace, fill, scaleInPlace } from "../../kernels/scale.ts"
import { axpyRef, scaleRef } from "../../kernels/scale.ref.ts"
import { Rng } from "../../common/rng.ts"
import { accumulateGrad, averageGrads } from "../../training/accumulate.ts"
import { gpu } from "../gpu-shared.ts"

const rand = (rng: Rng, n: number): Float32Array => Float32Array.from({ length: n }, () => rng.float() * 2 - 1)
const maxErr = (got: ArrayLike<number>, want: ArrayLike<number>): number => {
  let e = 0
  for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!))
  return e
}

describe("scale kernels", () => {
  for (const n of [8, 9, 1]) {
    test(`scale, axpy, fill (n = ${n})`, async () => {
      const rt = await gpu()
      const rng = Rng.seeded(1, n)
      const x = rand(rng, n), y = rand(rng, n)
      const tx = rt.upload(x), ty = rt.upload(y)
      scaleInPlace(rt, tx, 0.3)
      expect(maxErr(await rt.read(tx), scaleRef(x, 0.3))).toBeLessThan(1e-7) // one f32 rounding of |x| ≤ 1
      axpyInPlace(rt, tx, ty, -2.5)
      expect(maxErr(await rt.read(tx), axpyRef(scaleRef(x, 0.3), y, -2.5))).toBeLessThan(1e-6)
      rt.write(tx, Float32Array.from({ length: n }, () => NaN))
      fill(rt, tx, 0)
      expect([...(await rt.read(tx))]).toEqual(new Array<number>(n).fill(0))
      expect(() => axpyInPlace(rt, tx, tx, 1)).toThrow(/different buffers/)
      rt.release(tx, ty)
    })
  }
})

describe("gradient accumulation", () => {
  test("weighted accumulation and summing then averaging both give the mean gradient", async () => {
    const rt = await gpu()
    const rng = Rng.seeded(2)
    const n = 1000, steps = 4
    const micro = Array.from({ length: steps }, () => rand(rng, n))
    const mean = new Float64Array(n)
    for (const g of micro) for (let i = 0; i < n; i++) mean[i]! += g[i]! / steps
    const a = rt.upload(new Float32Array(n)), b = rt.upload(new Float32Array(n)), g = rt.tensor([n])
    for (const h of micro) {
      rt.write(g, h)
      accumulateGrad(rt, a, g, 1 / steps)
      accumulateGrad(rt, b, g)
    }
    averageGrads(rt, [b], steps)
    // 4 f32 roundings of values ≤ 1.
    expect(maxErr(await rt.read(a), mean)).toBeLessThan(5e-7)
    expect(maxErr(await rt.read(b), mean)).toBeLessThan(5e-7)
    expect(() => averageGrads(rt, [b], 0)).toThrow(/steps must be/)
    rt.release(a, b, g)
  })
})
