import { describe, expect, test } from "bun:test"
import { crossEntropyBackward } from "../../kernels/cross-entropy-backward.ts"
import { crossEntropyBackwardRef, crossEntropyRef } from "../../kernels/cross-entropy-backward.ref.ts"
import { gpu } from "../gpu-shared.ts"
import { fdGrad, rand, relErr } from "./gradcheck.ts"

/** Targets in [0, V), some rows masked (weight 0), the rest 1/N: HF's mean over non-ignored labels. */
function labels(T: number, V: number, seed: number): { targets: Uint32Array; w: Float32Array } {
  const r = rand(T, seed)
  const targets = Uint32Array.from(r, (x) => Math.floor(((x + 1) / 2) * V * 0.999))
  const masked = (i: number): boolean => i % 5 === 3
  let n = 0
  for (let i = 0; i < T; i++) if (!masked(i)) n++
  const w = Float32Array.from({ length: T }, (_, i) => (masked(i) ? 0 : 1 / n))
  return { targets, w }
}

describe("cross-entropy backward", () => {
  test("float64 analytic backward matches central differences (T 7, V 30)", () => {
    const T = 7, V = 30
    const logits = Float64Array.from(rand(T * V, 1, 5))
    const { targets, w } = labels(T, V, 2)
    const loss = (): number => crossEntropyRef(logits, V, targets, w)
    const e = relErr(crossEntropyBackwardRef(logits, V, targets, w), fdGrad(logits, loss))
    console.log(`cross-entropy ref vs finite differences: ${e.toExponential(2)}`)
    expect(e).toBeLessThan(1e-7)
  })

  for (const [T, V, scale] of [[7, 300, 5], [37, 301, 20], [5, 1024, 60]] as const) {
    test(`GPU vs float64: T ${T} V ${V}, |logits| ≤ ${scale}`, async () => {
      const rt = await gpu()
      const logits = rand(T * V, V + T, scale)
      const { targets, w } = labels(T, V, T)
      targets[1] = V - 1 // last column, the tail lane of a vec4
      const tl = rt.upload(logits, [T, V]), tt = rt.upload(targets), tw = rt.upload(w)
      const out = crossEntropyBackward(rt, tl, tt, tw)
      expect(out.shape).toEqual([T, V])
      const got = await rt.read(out)
      const e = relErr(got, crossEntropyBackwardRef(logits, V, targets, w))
      console.log(`cross-entropy backward T ${T} V ${V}: ${e.toExponential(2)}`)
      expect(e).toBeLessThan(1e-5)
      for (let v = 0; v < V; v++) expect(got[3 * V + v]).toBe(0) // masked row
      rt.release(tl, tt, tw, out)
    })
  }
})
