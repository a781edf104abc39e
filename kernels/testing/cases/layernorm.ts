/** Table cases of LayerNorm with bias (GPT-NeoX's norm). */
import { layernorm } from "../../layernorm.ts"
import { layernormRef } from "../../layernorm.ref.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

interface LayernormParams {
  readonly T: number
  readonly D: number
  readonly eps: number
  /** |x − offset| ≤ scale. */
  readonly scale: number
  /** Added to every x: a large mean tests the two-pass variance. */
  readonly offset?: number
  /** Row 0 set to a constant: zero variance gives the bias, not NaN. */
  readonly constantRow?: boolean
  readonly note?: string
}

function layernormCase(c: LayernormParams): KernelCase {
  const offset = c.offset ?? 0
  const host = once(() => {
    const x = rand(c.T * c.D, c.D, c.scale, offset)
    if (c.constantRow === true) x.fill(3, 0, c.D)
    return { x, w: rand(c.D, 7, 0.5, 1), b: rand(c.D, 8, 0.5) }
  })
  return {
    name: `T ${c.T} D ${c.D} eps ${c.eps} |x| ≤ ${c.scale} + ${offset}${c.note === undefined ? "" : ` (${c.note})`}`,
    dtype: "f32",
    setup(rt) {
      const { x, w, b } = host()
      const tx = rt.upload(x, [c.T, c.D]), tw = rt.upload(w), tb = rt.upload(b)
      return launcher(rt, [tx, tw, tb], () => ({ y: expectShapeOf("layernorm", "output", layernorm(rt, tx, tw, tb, c.eps), [c.T, c.D]) }))
    },
    expected: once(() => {
      const { x, w, b } = host()
      // Outputs are O(1): f32 sums and rsqrt give a few ulps relative, more with a large mean.
      return { y: { want: layernormRef(x, w, b, c.D, c.eps), tol: { rel: offset > 0 || c.constantRow === true ? 2e-5 : 2e-6, floor: 1 }, shape: [c.T, c.D] } }
    }),
  }
}

export const layernormOp: KernelOp = {
  op: "layernorm",
  variants: () => SINGLE,
  cases: () => [
    layernormCase({ T: 5, D: 64, eps: 1e-5, scale: 1 }),
    layernormCase({ T: 3, D: 4096, eps: 1e-5, scale: 3 }),
    layernormCase({ T: 7, D: 100, eps: 1e-5, scale: 1, offset: 40, note: "a large mean: two passes keep the variance" }),
    layernormCase({ T: 9, D: 37, eps: 1e-5, scale: 50, note: "scalar path, D below the workgroup size" }),
    layernormCase({ T: 2, D: 3, eps: 1e-6, scale: 1 }),
    layernormCase({ T: 4, D: 260, eps: 1e-2, scale: 0.01, note: "eps dominates the variance" }),
    layernormCase({ T: 65535 + 77, D: 4, eps: 1e-5, scale: 2, constantRow: true, note: "a constant row gives the bias; more rows than workgroups per dispatch" }),
  ],
}
