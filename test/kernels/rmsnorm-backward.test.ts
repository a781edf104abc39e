import { describe, expect, test } from "bun:test"
import { rmsnormBackward } from "../../kernels/rmsnorm-backward.ts"
import { rmsnormBackwardRef } from "../../kernels/rmsnorm-backward.ref.ts"
import { rmsnormRef } from "../../kernels/rmsnorm.ref.ts"
import { gpu } from "../gpu-shared.ts"
import { dotLoss, fdGrad, rand, relErr } from "./gradcheck.ts"

describe("rmsnorm backward", () => {
  test("float64 analytic backward matches central differences (T 7, D 24)", () => {
    const T = 7, D = 24, eps = 1e-5
    const x = Float64Array.from(rand(T * D, 1, 2)), w = Float64Array.from(rand(D, 2, 0.5, 1)), g = rand(T * D, 3)
    const loss = (): number => dotLoss(g, rmsnormRef(x, w, D, eps))
    const { dx, dw } = rmsnormBackwardRef(x, w, g, D, eps)
    const ex = relErr(dx, fdGrad(x, loss)), ew = relErr(dw, fdGrad(w, loss))
    console.log(`rmsnorm ref vs finite differences: dx ${ex.toExponential(2)}, dw ${ew.toExponential(2)}`)
    expect(ex).toBeLessThan(1e-7)
    expect(ew).toBeLessThan(1e-7)
  })

  const cases = [
    { T: 7, D: 24, eps: 1e-5, scale: 1 },
    { T: 37, D: 40, eps: 1e-6, scale: 3 },
    { T: 100, D: 64, eps: 1e-5, scale: 1 }, // several dw chunks
    { T: 9, D: 37, eps: 1e-5, scale: 20 }, // scalar path
    { T: 3, D: 300, eps: 1e-2, scale: 0.01 }, // eps dominates, several columns per invocation
  ]
  for (const c of cases) {
    test(`GPU vs float64: T ${c.T} D ${c.D} eps ${c.eps} |x| ≤ ${c.scale}`, async () => {
      const rt = await gpu()
      const x = rand(c.T * c.D, c.D, c.scale), w = rand(c.D, 7, 0.5, 1), dy = rand(c.T * c.D, 11)
      const tx = rt.upload(x, [c.T, c.D]), tw = rt.upload(w), tdy = rt.upload(dy, [c.T, c.D])
      const { dx, dw } = rmsnormBackward(rt, tx, tw, tdy, c.eps)
      expect(dx.shape).toEqual([c.T, c.D])
      expect(dw.shape).toEqual([c.D])
      const want = rmsnormBackwardRef(x, w, dy, c.D, c.eps)
      const ex = relErr(await rt.read(dx), want.dx), ew = relErr(await rt.read(dw), want.dw)
      console.log(`rmsnorm backward T ${c.T} D ${c.D}: dx ${ex.toExponential(2)}, dw ${ew.toExponential(2)}`)
      expect(ex).toBeLessThan(1e-5)
      expect(ew).toBeLessThan(1e-5)
      rt.release(tx, tw, tdy, dx, dw)
    })
  }

  test("deterministic: two runs give identical bits", async () => {
    const rt = await gpu()
    const T = 77, D = 32
    const tx = rt.upload(rand(T * D, 5), [T, D]), tw = rt.upload(rand(D, 6)), tdy = rt.upload(rand(T * D, 8), [T, D])
    const a = rmsnormBackward(rt, tx, tw, tdy, 1e-5), b = rmsnormBackward(rt, tx, tw, tdy, 1e-5)
    expect(await rt.read(a.dw)).toEqual(await rt.read(b.dw))
    expect(await rt.read(a.dx)).toEqual(await rt.read(b.dx))
    rt.release(tx, tw, tdy, a.dx, a.dw, b.dx, b.dw)
  })
})
