/** Table cases of the RoPE backward (dx = Rᵀ·dy), and backward∘forward = m²·x. */
import { applyRopeBackward, inverseRopeTable } from "../../rope-backward.ts"
import { ropeBackwardRef } from "../../rope-backward.ref.ts"
import { type RopeTable, defaultInvFreq } from "../../rope-table.ts"
import { applyRope, releaseRopeTable, uploadRopeTable } from "../../rope.ts"
import { ropeRef } from "../../rope.ref.ts"
import { dotLoss, fdGrad } from "../gradcheck.ts"
import { type KernelCase, type KernelOp, SINGLE, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

/** LongRoPE-like table: per-layer factors (layer l divides θ_i by 1 + (l + 1)·i/half·3), n̂, m. */
function table(rotaryDim: number, layers: number, startTokens: number, attentionScale: number): RopeTable {
  const orig = defaultInvFreq(1e4, rotaryDim)
  const perLayer = Array.from({ length: layers }, (_, l) => orig.map((t, i) => t / (1 + ((l + 1) * i * 3) / orig.length)))
  return { rotaryDim, invFreq: layers === 1 ? perLayer[0]! : perLayer, originalInvFreq: orig, startTokens, attentionScale }
}

export interface RopeBackwardParams {
  readonly T: number
  readonly heads: number
  readonly headDim: number
  readonly rotaryDim: number
  readonly layers: number
  readonly layer: number
  readonly startTokens: number
  readonly scale: number
  readonly note?: string
}

export function ropeBackwardCase(c: RopeBackwardParams): KernelCase {
  const width = c.heads * c.headDim
  const tbl = table(c.rotaryDim, c.layers, c.startTokens, c.scale)
  const opts = { heads: c.heads, headDim: c.headDim, layer: c.layer }
  // Restarting positions (packed documents), and far ones where f32 n·θ would be off by 0.1 rad.
  const positions = Uint32Array.from({ length: c.T }, (_, t) => (t < c.T - 4 ? t % 13 : 2_000_000 + t * 1_000_003))
  const dy = once(() => rand(c.T * width, c.T + c.headDim))
  return {
    name: `T ${c.T} heads ${c.heads} headDim ${c.headDim} rotary ${c.rotaryDim} layer ${c.layer}/${c.layers} n̂ ${c.startTokens} m ${c.scale}${c.note === undefined ? "" : ` (${c.note})`}`,
    dtype: "f32",
    setup(rt) {
      const gt = uploadRopeTable(rt, tbl, c.layers)
      const inv = inverseRopeTable(rt, gt)
      const tdy = rt.upload(dy(), [c.T, width]), tp = rt.upload(positions)
      const tx = rt.upload(dy(), [c.T, width])
      const run = () => {
        applyRopeBackward(rt, tdy, tp, gt, opts)
        // The round trip with a prepared inverse table.
        applyRope(rt, tx, tp, gt, opts)
        applyRopeBackward(rt, tx, tp, gt, opts, inv)
        return { dx: tdy, "backward∘forward": tx }
      }
      return launcher(rt, [tdy, tp, tx], run, { cleanup: () => [gt, inv].forEach((t) => releaseRopeTable(rt, t)) })
    },
    expected: once(() => {
      // backward(forward(x)) = m²·x on rotated dims of positions ≥ n̂, x elsewhere.
      const round = Float64Array.from(dy(), (v, k) => {
        const t = Math.floor(k / width), d = k % width
        return v * (d % c.headDim < c.rotaryDim && positions[t]! >= c.startTokens ? c.scale ** 2 : 1)
      })
      return {
        dx: { want: ropeBackwardRef(dy(), positions, tbl, opts), tol: { scaled: 1e-5 }, shape: [c.T, width] },
        "backward∘forward": { want: round, tol: { abs: 1e-5 }, shape: [c.T, width] },
      }
    }),
  }
}

export const ropeBackwardOp: KernelOp = {
  op: "rope-backward",
  variants: () => SINGLE,
  cases: () => [
    ropeBackwardCase({ T: 7, heads: 3, headDim: 24, rotaryDim: 24, layers: 1, layer: 0, startTokens: 0, scale: 1 }),
    ropeBackwardCase({ T: 37, heads: 2, headDim: 40, rotaryDim: 32, layers: 3, layer: 2, startTokens: 5, scale: 1.2, note: "vec4 path, partial" }),
    ropeBackwardCase({ T: 37, heads: 2, headDim: 24, rotaryDim: 20, layers: 2, layer: 1, startTokens: 4, scale: 0.9, note: "scalar path (half 10)" }),
  ],
  references: [
    {
      name: "ropeBackwardRef matches central differences of ropeRef (partial rotary, n̂, m, layer 1)",
      run() {
        const T = 7, heads = 2, headDim = 24
        const tbl = table(16, 2, 3, 1.3)
        const positions = [0, 1, 2, 3, 4, 0, 9]
        const opts = { heads, headDim, layer: 1 }
        const x = Float64Array.from(rand(T * heads * headDim, 1)), g = rand(T * heads * headDim, 2)
        const fd = fdGrad(x, () => dotLoss(g, ropeRef(x, positions, tbl, opts)))
        return { dx: { got: ropeBackwardRef(g, positions, tbl, opts), want: fd, tol: { scaled: 1e-8 } } }
      },
    },
  ],
}
