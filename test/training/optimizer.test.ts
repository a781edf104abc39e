import { describe, expect, test } from "bun:test"
import { type AdamWHyper } from "../../kernels/adamw.ts"
import { adamwRef } from "../../kernels/adamw.ref.ts"
import { clipCoefRef, sumSquaresRef } from "../../kernels/sumsq.ref.ts"
import { Rng } from "../../common/rng.ts"
import { Optimizer } from "../../training/optimizer.ts"
import { gpu } from "../gpu-shared.ts"

const rand = (rng: Rng, n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => (rng.float() * 2 - 1) * scale)
const maxErr = (got: ArrayLike<number>, want: ArrayLike<number>): number => {
  let e = 0
  for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!))
  return e
}

describe("Optimizer", () => {
  test("clip → AdamW over several tensors matches the float64 reference; no decay where excluded", async () => {
    const rt = await gpu()
    const rng = Rng.seeded(11)
    const h: AdamWHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 }
    const shapes = [[16, 8], [3], [5, 4]]
    const init = shapes.map((s) => rand(rng, s.reduce((a, b) => a * b, 1)))
    const decays = [true, false, true]
    const opt = new Optimizer(rt, shapes.map((s, i) => ({ name: `p${i}`, value: rt.upload(init[i]!, s), weightDecay: decays[i]! })), { ...h, maxGradNorm: 1 })
    const refs = init.map((x) => ({ p: Float64Array.from(x), m: new Float64Array(x.length), v: new Float64Array(x.length) }))
    let clipped = 0
    for (let t = 1; t <= 6; t++) {
      // Large gradients on odd steps (clipped), small ones on even steps (not).
      const grads = init.map((x) => rand(rng, x.length, t % 2 === 1 ? 3 : 0.01))
      opt.zeroGrad()
      grads.forEach((g, i) => rt.write(opt.grad(`p${i}`), g))
      const r = await opt.step(1e-2)
      const norm = Math.sqrt(sumSquaresRef(grads))
      const coef = clipCoefRef(norm, 1)
      expect(r.step).toBe(t)
      expect(Math.abs(r.gradNorm - norm) / norm).toBeLessThan(1e-6)
      expect(Math.abs(r.clipCoef - coef)).toBeLessThan(1e-6)
      if (coef < 1) clipped++
      refs.forEach((ref, i) => adamwRef(ref, grads[i]!, { ...h, weightDecay: decays[i] ? h.weightDecay : 0 }, 1e-2, t, r.clipCoef))
    }
    expect(clipped).toBe(3)
    expect(opt.stepCount).toBe(6)
    for (const [i, p] of opt.params.entries()) expect(maxErr(await rt.read(p.value), refs[i]!.p)).toBeLessThan(1e-6)
    // The test can tell decay from none: decaying p1 too would have moved it by ~6·lr·wd·|p| ≫ 1e-6.
    expect(maxErr(await rt.read(opt.param("p1").value), Float64Array.from(refs[1]!.p, (x) => x * (1 - 1e-2 * 0.05) ** 6))).toBeGreaterThan(1e-5)
    opt.dispose()
    rt.release(...opt.params.map((p) => p.value))
  })

  test("zeroGrad, a non-finite gradient skips the step, export/import round-trip", async () => {
    const rt = await gpu()
    const opt = new Optimizer(rt, [{ name: "w", value: rt.upload(Float32Array.of(1, 2, 3)) }])
    expect(await opt.gradNorm()).toBe(0)
    rt.write(opt.grad("w"), Float32Array.of(1, NaN, 0))
    const r = await opt.step(0.1)
    expect(r.skipped).toBe(true)
    expect(opt.stepCount).toBe(0)
    expect([...(await rt.read(opt.param("w").value))]).toEqual([1, 2, 3])
    opt.zeroGrad()
    rt.write(opt.grad("w"), Float32Array.of(3, 4, 0))
    expect(await opt.gradNorm()).toBeCloseTo(5, 6)
    await opt.step(0.1)
    const state = await opt.exportState()
    expect(state.step).toBe(1)
    const other = new Optimizer(rt, [{ name: "w", value: rt.upload(new Float32Array(3)) }])
    other.importState(state)
    expect(other.stepCount).toBe(1)
    expect([...(await rt.read(other.param("w").value))]).toEqual([...state.params[0]!.value])
    expect([...(await rt.read(other.param("w").m))]).toEqual([...state.params[0]!.m])
    const wrong = new Optimizer(rt, [{ name: "w", value: rt.upload(new Float32Array(4)) }])
    expect(() => wrong.importState(state, "ckpt")).toThrow(/ckpt: checkpoint from another architecture: "w" has shape \[3\] in the checkpoint, expected \[4\]/)
    expect(() => opt.param("nope")).toThrow(/no parameter "nope"/)
    expect(() => new Optimizer(rt, [{ name: "a", value: opt.param("w").value }, { name: "a", value: opt.param("w").value }])).toThrow(/given twice/)
    for (const o of [opt, other, wrong]) {
      o.dispose()
      rt.release(...o.params.map((p) => p.value))
    }
  })
})
