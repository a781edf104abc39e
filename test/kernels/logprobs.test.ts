import { describe, expect, test } from "bun:test"
import { logprobsFromLogits, logsumexpRows } from "../../kernels/logprobs.ts"
import { logprobsRef, logsumexpRowsRef } from "../../kernels/logprobs.ref.ts"
import { gpu } from "../gpu-shared.ts"

const rng = (seed: number) => {
  let s = seed >>> 0
  return (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

describe("logprobs", () => {
  const cases = [
    { T: 5, V: 256, scale: 4, offset: 0 },
    { T: 3, V: 1000, scale: 10, offset: 0 },
    { T: 3, V: 32000, scale: 8, offset: 0 },
    { T: 7, V: 1001, scale: 5, offset: 0 }, // scalar path
    { T: 2, V: 3, scale: 1, offset: 0 }, // fewer columns than invocations
    // Large magnitudes: exp(x) would overflow f32 without the running max. Inputs are f32, so the
    // result's absolute error scales with the magnitude (ulp(3e4) ≈ 2e-3).
    { T: 4, V: 32000, scale: 200, offset: 3e4 },
    { T: 4, V: 517, scale: 2000, offset: -5e4 },
  ]
  for (const c of cases) {
    test(`T ${c.T} V ${c.V} logits ${c.offset} ± ${c.scale}`, async () => {
      const rt = await gpu()
      const r = rng(c.V + c.T)
      const logits = new Float32Array(c.T * c.V).map(() => c.offset + (r() * 2 - 1) * c.scale)
      // Targets: the row's argmax for row 0 (logprob near 0), random otherwise, the last column once.
      const targets = Uint32Array.from({ length: c.T }, (_, t) => (t === 1 ? c.V - 1 : Math.floor(r() * c.V)))
      let best = 0
      for (let v = 1; v < c.V; v++) if (logits[v]! > logits[best]!) best = v
      targets[0] = best
      const tl = rt.upload(logits, [c.T, c.V]), tt = rt.upload(targets)
      const lp = logprobsFromLogits(rt, tl, tt)
      const lse = logsumexpRows(rt, tl)
      expect(lp.shape).toEqual([c.T])
      const gotLp = await rt.read(lp), gotLse = await rt.read(lse)
      const wantLp = logprobsRef(logits, c.V, targets), wantLse = logsumexpRowsRef(logits, c.V)
      const tol = 5e-7 * Math.max(4, Math.abs(c.offset) + c.scale) // ~4 f32 ulps of the logits' scale (measured ≤ 1e-6 at ±10)
      for (let t = 0; t < c.T; t++) {
        expect(Math.abs(gotLp[t]! - wantLp[t]!)).toBeLessThan(tol)
        expect(Math.abs(gotLse[t]! - wantLse[t]!)).toBeLessThan(tol)
      }
      rt.release(tl, tt, lp, lse)
    })
  }

  test("rows with -Infinity-like masked entries and one dominant logit", async () => {
    const rt = await gpu()
    const V = 64
    const logits = new Float32Array(2 * V).fill(-3e38)
    logits[5] = 0 // row 0: a single live entry → log p = 0
    logits[V + 1] = 1e4
    logits[V + 2] = 1e4 - Math.log(3) // row 1: p = 3/4, 1/4
    const tl = rt.upload(logits, [2, V]), tt = rt.upload(Uint32Array.from([5, 2]))
    const got = await rt.read(logprobsFromLogits(rt, tl, tt))
    expect(Math.abs(got[0]!)).toBeLessThan(1e-6)
    expect(Math.abs(got[1]! - Math.log(1 / 4))).toBeLessThan(2e-3)
    rt.release(tl, tt)
  })

  test("shape checks", async () => {
    const rt = await gpu()
    const tl = rt.upload(new Float32Array(8), [2, 4]), tt = rt.upload(Uint32Array.from([0, 1, 2]))
    expect(() => logprobsFromLogits(rt, tl, tt)).toThrow(/targets has shape/)
    rt.release(tl, tt)
  })
})
