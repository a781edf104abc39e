/** Table cases of GELU (exact, erf form), and a check of the reference's erf against known values. */
import { gelu } from "../../gelu.ts"
import { erfRef, geluRef } from "../../gelu.ref.ts"
import type { Tolerance } from "../compare.ts"
import { type KernelCase, type KernelOp, type ReferenceCheck, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

function geluCase(name: string, input: () => Float32Array, tol: Tolerance): KernelCase {
  const host = once(input)
  return {
    name,
    dtype: "f32",
    setup(rt) {
      const x = host()
      const tx = rt.upload(x, [x.length])
      return launcher(rt, [tx], () => ({ y: expectShapeOf("gelu", "output", gelu(rt, tx), [x.length]) }))
    },
    expected: once(() => ({ y: { want: geluRef(host()), tol } })),
  }
}

/** A&S 7.1.26's erf is within 1.5e-7; times 0.5·|x| plus f32 rounding. */
const randomCase = (n: number): KernelCase =>
  geluCase(`${n} values in [-8, 8] (${n % 4 === 0 ? "vec4" : "scalar"} path)`, () => rand(n, n, 8), { rel: 1e-6, floor: 1 })

/** erf at known values (to 1e-13), odd, ±1 far out. */
const erfKnown: ReferenceCheck = {
  name: "the reference's erf at known values",
  run() {
    const known: Array<[number, number]> = [[0, 0], [0.5, 0.5204998778130465], [1, 0.8427007929497149], [2, 0.9953222650189527], [2.9, 0.9999589021219005], [3.5, 0.9999992569016276], [5, 0.9999999999984626], [7, 1]]
    const xs = known.flatMap(([x]) => [x, -x])
    return {
      erf: { got: xs.map(erfRef), want: known.flatMap(([, v]) => [v, -v]), tol: { abs: 1e-13 } },
    }
  },
}

export const geluOp: KernelOp = {
  op: "gelu",
  variants: () => SINGLE,
  references: [erfKnown],
  cases: () => [
    randomCase(4096),
    randomCase(1023),
    randomCase(3),
    randomCase(1),
    // No overflow: identity far above 0, 0 far below.
    geluCase("large inputs: identity above, 0 below", () => Float32Array.from([40, -40, 1e4, -1e4]), { abs: 1e-30 }),
  ],
}
