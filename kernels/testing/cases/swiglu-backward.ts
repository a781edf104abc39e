/** Table cases of the SwiGLU backward (dgate, dup). */
import { swigluBackward } from "../../swiglu-backward.ts"
import { swigluBackwardRef } from "../../swiglu-backward.ref.ts"
import { swigluRef } from "../../swiglu.ref.ts"
import { dotLoss, fdGrad } from "../gradcheck.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export function swigluBackwardCase(T: number, D: number, scale: number): KernelCase {
  const n = T * D
  const host = once(() => ({ gate: rand(n, D, scale), up: rand(n, 7, 2), dOut: rand(n, 9) }))
  return {
    name: `T ${T} D ${D}, |gate| ≤ ${scale}`,
    dtype: "f32",
    setup(rt) {
      const { gate, up, dOut } = host()
      const tg = rt.upload(gate, [T, D]), tu = rt.upload(up, [T, D]), td = rt.upload(dOut, [T, D])
      return launcher(rt, [tg, tu, td], () => {
        const { dgate, dup } = swigluBackward(rt, tg, tu, td)
        return { dgate: expectShapeOf("swigluBackward", "dgate", dgate, [T, D]), dup: expectShapeOf("swigluBackward", "dup", dup, [T, D]) }
      })
    },
    expected: once(() => {
      const { gate, up, dOut } = host()
      const want = swigluBackwardRef(gate, up, dOut)
      return { dgate: { want: want.dgate, tol: { scaled: 1e-5 }, shape: [T, D] }, dup: { want: want.dup, tol: { scaled: 1e-5 }, shape: [T, D] } }
    }),
  }
}

export const swigluBackwardOp: KernelOp = {
  op: "swiglu-backward",
  variants: () => SINGLE,
  cases: () => [swigluBackwardCase(7, 24, 4), swigluBackwardCase(37, 40, 30), swigluBackwardCase(5, 37, 8)],
  references: [
    {
      name: "swigluBackwardRef matches central differences of swigluRef (7×24, |gate| ≤ 12)",
      run() {
        const n = 7 * 24
        const gate = Float64Array.from(rand(n, 1, 12)), up = Float64Array.from(rand(n, 2, 2)), g = rand(n, 3)
        const loss = (): number => dotLoss(g, swigluRef(gate, up))
        const { dgate, dup } = swigluBackwardRef(gate, up, g)
        return { dgate: { got: dgate, want: fdGrad(gate, loss), tol: { scaled: 1e-7 } }, dup: { got: dup, want: fdGrad(up, loss), tol: { scaled: 1e-7 } } }
      },
    },
  ],
}
