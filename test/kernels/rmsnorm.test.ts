import { describe, expect, test } from "bun:test"
import { rmsnorm } from "../../kernels/rmsnorm.ts"
import { rmsnormRef } from "../../kernels/rmsnorm.ref.ts"
import { gpu } from "../gpu-shared.ts"
import { rand } from "./gradcheck.ts"

describe("rmsnorm", () => {
  const cases = [
    { T: 5, D: 64, eps: 1e-5, scale: 1 },
    { T: 3, D: 4096, eps: 1e-6, scale: 3 },
    { T: 7, D: 100, eps: 1e-5, scale: 1 },
    { T: 9, D: 37, eps: 1e-5, scale: 50 }, // scalar path, D below the workgroup size
    { T: 2, D: 3, eps: 1e-6, scale: 1 },
    { T: 4, D: 260, eps: 1e-2, scale: 0.01 }, // eps dominates the mean square
  ]
  for (const c of cases) {
    test(`T ${c.T} D ${c.D} eps ${c.eps} |x| ≤ ${c.scale}`, async () => {
      const rt = await gpu()
      const x = rand(c.T * c.D, c.D, c.scale), w = rand(c.D, 7, 0.5, 1)
      const tx = rt.upload(x, [c.T, c.D]), tw = rt.upload(w)
      const out = rmsnorm(rt, tx, tw, c.eps)
      expect(out.shape).toEqual([c.T, c.D])
      const got = await rt.read(out)
      const want = rmsnormRef(x, w, c.D, c.eps)
      // Outputs are O(1): f32 sum of squares and rsqrt give a few ulps relative.
      let err = 0
      for (let k = 0; k < want.length; k++) err = Math.max(err, Math.abs(got[k]! - want[k]!) / Math.max(1, Math.abs(want[k]!)))
      expect(err).toBeLessThan(2e-6)
      rt.release(tx, tw, out)
    })
  }

  test("3-d input and a zero row (gives 0, not NaN)", async () => {
    const rt = await gpu()
    const x = rand(2 * 3 * 8, 5)
    x.fill(0, 8, 16)
    const w = rand(8, 6, 0.5, 1)
    const tx = rt.upload(x, [2, 3, 8]), tw = rt.upload(w)
    const out = rmsnorm(rt, tx, tw, 1e-6)
    expect(out.shape).toEqual([2, 3, 8])
    const got = await rt.read(out)
    const want = rmsnormRef(x, w, 8, 1e-6)
    for (let k = 0; k < want.length; k++) expect(Math.abs(got[k]! - want[k]!)).toBeLessThan(2e-6 * Math.max(1, Math.abs(want[k]!)))
    rt.release(tx, tw, out)
  })

  test("more rows than workgroups per dispatch (grid-stride over rows)", async () => {
    const rt = await gpu()
    const T = 65535 + 77, D = 4
    const x = rand(T * D, 9, 2), w = rand(D, 10, 0.5, 1)
    const tx = rt.upload(x, [T, D]), tw = rt.upload(w)
    const out = rmsnorm(rt, tx, tw, 1e-5)
    const got = await rt.read(out)
    const want = rmsnormRef(x, w, D, 1e-5)
    let err = 0
    for (let k = 0; k < want.length; k++) err = Math.max(err, Math.abs(got[k]! - want[k]!) / Math.max(1, Math.abs(want[k]!)))
    expect(err).toBeLessThan(2e-6)
    rt.release(tx, tw, out)
  })
})
