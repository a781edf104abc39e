// LayerNorm with bias (GPT-NeoX's norm) against its float64 reference.
import { describe, expect, test } from "bun:test"
import { layernorm } from "../../kernels/layernorm.ts"
import { layernormRef } from "../../kernels/layernorm.ref.ts"
import { gpu } from "../gpu-shared.ts"
import { rand } from "./gradcheck.ts"

const maxRelErr = (got: ArrayLike<number>, want: ArrayLike<number>): number => {
  let err = 0
  for (let k = 0; k < want.length; k++) err = Math.max(err, Math.abs(got[k]! - want[k]!) / Math.max(1, Math.abs(want[k]!)))
  return err
}

describe("layernorm", () => {
  const cases = [
    { T: 5, D: 64, eps: 1e-5, scale: 1, offset: 0 },
    { T: 3, D: 4096, eps: 1e-5, scale: 3, offset: 0 },
    { T: 7, D: 100, eps: 1e-5, scale: 1, offset: 40 }, // a large mean: two passes keep the variance
    { T: 9, D: 37, eps: 1e-5, scale: 50, offset: 0 }, // scalar path, D below the workgroup size
    { T: 2, D: 3, eps: 1e-6, scale: 1, offset: 0 },
    { T: 4, D: 260, eps: 1e-2, scale: 0.01, offset: 0 }, // eps dominates the variance
  ]
  for (const c of cases) {
    test(`T ${c.T} D ${c.D} eps ${c.eps} |x| ≤ ${c.scale} + ${c.offset}`, async () => {
      const rt = await gpu()
      const x = rand(c.T * c.D, c.D, c.scale).map((v) => v + c.offset), w = rand(c.D, 7, 0.5, 1), b = rand(c.D, 8, 0.5)
      const tx = rt.upload(x, [c.T, c.D]), tw = rt.upload(w), tb = rt.upload(b)
      const out = layernorm(rt, tx, tw, tb, c.eps)
      expect(out.shape).toEqual([c.T, c.D])
      // Outputs are O(1): f32 sums and rsqrt give a few ulps relative, more with a large mean.
      expect(maxRelErr(await rt.read(out), layernormRef(x, w, b, c.D, c.eps))).toBeLessThan(c.offset > 0 ? 2e-5 : 2e-6)
      rt.release(tx, tw, tb, out)
    })
  }

  test("a constant row gives the bias (zero variance, no NaN); more rows than workgroups per dispatch", async () => {
    const rt = await gpu()
    const T = 65535 + 77, D = 4
    const x = rand(T * D, 9, 2)
    x.fill(3, 0, D)
    const w = rand(D, 10, 0.5, 1), b = rand(D, 11, 0.5)
    const tx = rt.upload(x, [T, D]), tw = rt.upload(w), tb = rt.upload(b)
    const out = layernorm(rt, tx, tw, tb, 1e-5)
    const got = await rt.read(out)
    for (let d = 0; d < D; d++) expect(got[d]!).toBeCloseTo(b[d]!, 6)
    expect(maxRelErr(got, layernormRef(x, w, b, D, 1e-5))).toBeLessThan(1e-5)
    rt.release(tx, tw, tb, out)
  })
})
