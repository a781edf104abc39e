import { describe, expect, test } from "bun:test"
import { applyRopeBackward, inverseRopeTable } from "../../kernels/rope-backward.ts"
import { ropeBackwardRef } from "../../kernels/rope-backward.ref.ts"
import { type RopeTable, defaultInvFreq } from "../../kernels/rope-table.ts"
import { applyRope, releaseRopeTable, uploadRopeTable } from "../../kernels/rope.ts"
import { ropeRef } from "../../kernels/rope.ref.ts"
import { gpu } from "../gpu-shared.ts"
import { dotLoss, fdGrad, rand, relErr } from "./gradcheck.ts"

/** LongRoPE-like table: per-layer factors (layer l divides θ_i by 1 + (l + 1)·i/half·3), n̂, m. */
function table(rotaryDim: number, layers: number, startTokens: number, attentionScale: number): RopeTable {
  const orig = defaultInvFreq(1e4, rotaryDim)
  const perLayer = Array.from({ length: layers }, (_, l) => orig.map((t, i) => t / (1 + ((l + 1) * i * 3) / orig.length)))
  return { rotaryDim, invFreq: layers === 1 ? perLayer[0]! : perLayer, originalInvFreq: orig, startTokens, attentionScale }
}

describe("rope backward", () => {
  test("float64 reference matches central differences of ropeRef (partial rotary, n̂, m, layer 1)", () => {
    const T = 7, heads = 2, headDim = 24
    const tbl = table(16, 2, 3, 1.3)
    const positions = [0, 1, 2, 3, 4, 0, 9]
    const opts = { heads, headDim, layer: 1 }
    const x = Float64Array.from(rand(T * heads * headDim, 1)), g = rand(T * heads * headDim, 2)
    const fd = fdGrad(x, () => dotLoss(g, ropeRef(x, positions, tbl, opts)))
    const e = relErr(ropeBackwardRef(g, positions, tbl, opts), fd)
    console.log(`rope ref vs finite differences: ${e.toExponential(2)}`)
    expect(e).toBeLessThan(1e-8)
  })

  const cases = [
    { T: 7, heads: 3, headDim: 24, rotaryDim: 24, layers: 1, layer: 0, startTokens: 0, scale: 1 },
    { T: 37, heads: 2, headDim: 40, rotaryDim: 32, layers: 3, layer: 2, startTokens: 5, scale: 1.2 }, // vec4 path, partial
    { T: 37, heads: 2, headDim: 24, rotaryDim: 20, layers: 2, layer: 1, startTokens: 4, scale: 0.9 }, // scalar path (half 10)
  ]
  for (const c of cases) {
    test(`GPU vs float64: T ${c.T} heads ${c.heads} headDim ${c.headDim} rotary ${c.rotaryDim} layer ${c.layer}/${c.layers} n̂ ${c.startTokens} m ${c.scale}`, async () => {
      const rt = await gpu()
      const width = c.heads * c.headDim
      const tbl = table(c.rotaryDim, c.layers, c.startTokens, c.scale)
      // Restarting positions (packed documents), and far ones where f32 n·θ would be off by 0.1 rad.
      const positions = Uint32Array.from({ length: c.T }, (_, t) => (t < c.T - 4 ? t % 13 : 2_000_000 + t * 1_000_003))
      const opts = { heads: c.heads, headDim: c.headDim, layer: c.layer }
      const dy = rand(c.T * width, c.T + c.headDim)
      const gt = uploadRopeTable(rt, tbl, c.layers)
      const tdy = rt.upload(dy, [c.T, width]), tp = rt.upload(positions)
      applyRopeBackward(rt, tdy, tp, gt, opts)
      const got = await rt.read(tdy)
      const e = relErr(got, ropeBackwardRef(dy, positions, tbl, opts))
      console.log(`rope backward ${c.headDim}/${c.rotaryDim}: ${e.toExponential(2)}`)
      expect(e).toBeLessThan(1e-5)
      // backward(forward(x)) = m²·x on rotated dims of positions ≥ n̂, x elsewhere.
      const inv = inverseRopeTable(rt, gt)
      const tx = rt.upload(dy, [c.T, width])
      applyRope(rt, tx, tp, gt, opts)
      applyRopeBackward(rt, tx, tp, gt, opts, inv)
      const round = await rt.read(tx)
      let err = 0
      for (let t = 0; t < c.T; t++) {
        for (let d = 0; d < width; d++) {
          const rotated = d % c.headDim < c.rotaryDim && positions[t]! >= c.startTokens
          const want = dy[t * width + d]! * (rotated ? c.scale ** 2 : 1)
          err = Math.max(err, Math.abs(round[t * width + d]! - want))
        }
      }
      expect(err).toBeLessThan(1e-5)
      rt.release(tdy, tp, tx)
      releaseRopeTable(rt, gt)
      releaseRopeTable(rt, inv)
    })
  }
})
