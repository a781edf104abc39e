/** Table cases of the RMSNorm backward (dx, and dw summed over rows). */
import { rmsnormBackward } from "../../rmsnorm-backward.ts"
import { rmsnormBackwardRef } from "../../rmsnorm-backward.ref.ts"
import { rmsnormRef } from "../../rmsnorm.ref.ts"
import { dotLoss, fdGrad } from "../gradcheck.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export interface RmsnormBackwardParams {
  readonly T: number
  readonly D: number
  readonly eps: number
  readonly scale: number
  readonly note?: string
  readonly deterministic?: boolean
}

export function rmsnormBackwardCase(c: RmsnormBackwardParams): KernelCase {
  const host = once(() => ({ x: rand(c.T * c.D, c.D, c.scale), w: rand(c.D, 7, 0.5, 1), dy: rand(c.T * c.D, 11) }))
  return {
    name: `T ${c.T} D ${c.D} eps ${c.eps} |x| ≤ ${c.scale}${c.note === undefined ? "" : ` (${c.note})`}`,
    dtype: "f32",
    ...(c.deterministic === true ? { deterministic: true } : {}),
    setup(rt) {
      const { x, w, dy } = host()
      const tx = rt.upload(x, [c.T, c.D]), tw = rt.upload(w), tdy = rt.upload(dy, [c.T, c.D])
      return launcher(rt, [tx, tw, tdy], () => {
        const { dx, dw } = rmsnormBackward(rt, tx, tw, tdy, c.eps)
        return { dx: expectShapeOf("rmsnormBackward", "dx", dx, [c.T, c.D]), dw: expectShapeOf("rmsnormBackward", "dw", dw, [c.D]) }
      })
    },
    expected: once(() => {
      const { x, w, dy } = host()
      const want = rmsnormBackwardRef(x, w, dy, c.D, c.eps)
      return { dx: { want: want.dx, tol: { scaled: 1e-5 }, shape: [c.T, c.D] }, dw: { want: want.dw, tol: { scaled: 1e-5 } } }
    }),
  }
}

export const rmsnormBackwardOp: KernelOp = {
  op: "rmsnorm-backward",
  variants: () => SINGLE,
  cases: () => [
    rmsnormBackwardCase({ T: 7, D: 24, eps: 1e-5, scale: 1 }),
    rmsnormBackwardCase({ T: 37, D: 40, eps: 1e-6, scale: 3 }),
    rmsnormBackwardCase({ T: 100, D: 64, eps: 1e-5, scale: 1, note: "several dw chunks" }),
    rmsnormBackwardCase({ T: 9, D: 37, eps: 1e-5, scale: 20, note: "scalar path" }),
    rmsnormBackwardCase({ T: 3, D: 300, eps: 1e-2, scale: 0.01, note: "eps dominates, several columns per invocation" }),
    rmsnormBackwardCase({ T: 77, D: 32, eps: 1e-5, scale: 1, deterministic: true }),
  ],
  references: [
    {
      name: "rmsnormBackwardRef matches central differences of rmsnormRef (T 7, D 24)",
      run() {
        const T = 7, D = 24, eps = 1e-5
        const x = Float64Array.from(rand(T * D, 1, 2)), w = Float64Array.from(rand(D, 2, 0.5, 1)), g = rand(T * D, 3)
        const loss = (): number => dotLoss(g, rmsnormRef(x, w, D, eps))
        const { dx, dw } = rmsnormBackwardRef(x, w, g, D, eps)
        return { dx: { got: dx, want: fdGrad(x, loss), tol: { scaled: 1e-7 } }, dw: { got: dw, want: fdGrad(w, loss), tol: { scaled: 1e-7 } } }
      },
    },
  ],
}
