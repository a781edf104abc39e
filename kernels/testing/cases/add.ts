/** Table cases of elementwise addition: `add` (a new tensor) and `addInPlace`. */
import { add, addInPlace } from "../../add.ts"
import { addRef } from "../../add.ref.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export function addCase(shape: readonly number[], note?: string): KernelCase {
  const n = shape.reduce((a, b) => a * b, 1)
  const host = once(() => ({ a: rand(n, 1, 10), b: rand(n, 2, 10) }))
  return {
    name: `${shape.join("×")}${note === undefined ? "" : ` (${note})`}`,
    dtype: "f32",
    setup(rt) {
      const { a, b } = host()
      const ta = rt.upload(a, shape), tb = rt.upload(b, shape)
      return launcher(rt, [ta, tb], () => {
        const sum = expectShapeOf("add", "output", add(rt, ta, tb), shape)
        addInPlace(rt, ta, tb)
        return { add: sum, addInPlace: ta }
      })
    },
    expected: once(() => {
      const { a, b } = host()
      // f32 addition of f32 inputs: one rounding, ≤ half an ulp of |sum| ≤ 20.
      const want = addRef(a, b)
      return { add: { want, tol: { abs: 1e-6 } }, addInPlace: { want, tol: { abs: 1e-6 } } }
    }),
  }
}

// 4·k sizes take the vec4 path, the others the scalar path.
export const addOp: KernelOp = {
  op: "add",
  variants: () => SINGLE,
  cases: () => [
    addCase([1, 4]),
    addCase([7, 129], "not a multiple of the workgroup"),
    addCase([3, 1000]),
    addCase([1, 1]),
    addCase([5, 33]),
    addCase([65535 * 64 + 37], "scalar path past 65535 workgroups: one more pass of the grid-stride loop"),
  ],
}
