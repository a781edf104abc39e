// GELU (exact, erf form) against its float64 reference; the reference's erf against known values.
import { describe, expect, test } from "bun:test"
import { gelu } from "../../kernels/gelu.ts"
import { erfRef, geluRef } from "../../kernels/gelu.ref.ts"
import { gpu } from "../gpu-shared.ts"
import { rand } from "./gradcheck.ts"

describe("gelu", () => {
  test("the reference's erf: known values to 1e-13, odd, ±1 far out", () => {
    const known: Array<[number, number]> = [[0.5, 0.5204998778130465], [1, 0.8427007929497149], [2, 0.9953222650189527], [2.9, 0.9999589021219005], [3.5, 0.9999992569016276], [5, 0.9999999999984626]]
    for (const [x, v] of known) {
      expect(Math.abs(erfRef(x) - v)).toBeLessThan(1e-13)
      expect(erfRef(-x)).toBe(-erfRef(x))
    }
    expect(erfRef(0)).toBe(0)
    expect(erfRef(7)).toBe(1)
  })

  for (const n of [4096, 1023, 3, 1]) {
    test(`${n} values in [-8, 8] (${n % 4 === 0 ? "vec4" : "scalar"} path)`, async () => {
      const rt = await gpu()
      const x = rand(n, n, 8)
      const tx = rt.upload(x, [n])
      const out = gelu(rt, tx)
      const got = await rt.read(out)
      const want = geluRef(x)
      // A&S 7.1.26's erf is within 1.5e-7; times 0.5·|x| plus f32 rounding.
      let err = 0
      for (let k = 0; k < n; k++) err = Math.max(err, Math.abs(got[k]! - want[k]!) / Math.max(1, Math.abs(want[k]!)))
      expect(err).toBeLessThan(1e-6)
      rt.release(tx, out)
    })
  }

  test("large inputs: identity above, 0 below (no overflow)", async () => {
    const rt = await gpu()
    const x = Float32Array.from([40, -40, 1e4, -1e4])
    const tx = rt.upload(x, [4])
    const out = gelu(rt, tx)
    const got = await rt.read(out)
    expect([got[0], got[2]]).toEqual([40, 1e4])
    expect(Math.max(Math.abs(got[1]!), Math.abs(got[3]!))).toBeLessThan(1e-30)
    rt.release(tx, out)
  })
})
