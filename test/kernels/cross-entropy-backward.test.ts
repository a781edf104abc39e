import { describe, expect, test } from "bun:test"
import { crossEntropyBackward } from "../../kernels/cross-entropy-backward.ts"
import { crossEntropyBackwardRef, crossEntropyRef } from "../../kernels/cross-entropy-backward.ref.ts"
import { gpu } from "../gpu-shared.ts"


const rand = (n: number, seed: number, scale = 1, offset = 0): Float32Array => {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale + offset
  }
  return out
}

/** max |a − b| / max |b|: error relative to the tensor's scale. */
const relErr = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let e = 0, m = 1e-30
  for (let i = 0; i < b.length; i++) {
    e = Math.max(e, Math.abs(a[i]! - b[i]!))
    m = Math.max(m, Math.abs(b[i]!))
  }
  return e / m
}

/** Central differences of loss(v) = Σ g·f(v) with respect to every entry of v (float64). */
function fdGrad(v: Float64Array, loss: () => number, h = 1e-5): Float64Array {
  const g = new Float64Array(v.length)
  for (let i = 0; i < v.length; i++) {
    const old = v[i]!
    v[i] = old + h
    const up = loss()
    v[i] = old - h
    const down = loss()
    v[i] = old
    g[i] = (up - down) / (2 * h)
  }
  return g
}

const dotLoss = (g: ArrayLike<number>, y: ArrayLike<number>): number => {
  let s = 0
  for (let i = 0; i < y.length; i++) s += g[i]! * y[i]!
  return s
}



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
