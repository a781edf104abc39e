import { describe, expect, test } from "bun:test"
import { swigluBackward } from "../../kernels/swiglu-backward.ts"
import { swigluBackwardRef } from "../../kernels/swiglu-backward.ref.ts"
import { swigluRef } from "../../kernels/swiglu.ref.ts"
import { gpu } from "../gpu-shared.ts"
import { dotLoss, fdGrad, rand, relErr } from "./gradcheck.ts"

describe("swiglu backward", () => {
  test("float64 analytic backward matches central differences (7×24, |gate| ≤ 12)", () => {
    const n = 7 * 24
    const gate = Float64Array.from(rand(n, 1, 12)), up = Float64Array.from(rand(n, 2, 2)), g = rand(n, 3)
    const loss = (): number => dotLoss(g, swigluRef(gate, up))
    const { dgate, dup } = swigluBackwardRef(gate, up, g)
    const eg = relErr(dgate, fdGrad(gate, loss)), eu = relErr(dup, fdGrad(up, loss))
    console.log(`swiglu ref vs finite differences: dgate ${eg.toExponential(2)}, dup ${eu.toExponential(2)}`)
    expect(eg).toBeLessThan(1e-7)
    expect(eu).toBeLessThan(1e-7)
  })

  for (const [T, D, scale] of [[7, 24, 4], [37, 40, 30], [5, 37, 8]] as const) {
    test(`GPU vs float64: T ${T} D ${D}, |gate| ≤ ${scale}`, async () => {
      const rt = await gpu()
      const n = T * D
      const gate = rand(n, D, scale), up = rand(n, 7, 2), dOut = rand(n, 9)
      const tg = rt.upload(gate, [T, D]), tu = rt.upload(up, [T, D]), td = rt.upload(dOut, [T, D])
      const { dgate, dup } = swigluBackward(rt, tg, tu, td)
      expect(dgate.shape).toEqual([T, D])
      const want = swigluBackwardRef(gate, up, dOut)
      const eg = relErr(await rt.read(dgate), want.dgate), eu = relErr(await rt.read(dup), want.dup)
      console.log(`swiglu backward T ${T} D ${D}: dgate ${eg.toExponential(2)}, dup ${eu.toExponential(2)}`)
      expect(eg).toBeLessThan(1e-5)
      expect(eu).toBeLessThan(1e-5)
      rt.release(tg, tu, td, dgate, dup)
    })
  }
})
