/** Table cases of dropout: the mask is integer hashing and the scale one f32 multiply, so the output is exact. */
import { dropout } from "../../dropout.ts"
import { dropoutRef } from "../../dropout.ref.ts"
import { type KernelCase, type KernelOp, SINGLE, launcher, once } from "../kernel-case.ts"
import { rand } from "../random.ts"

function dropoutCase(n: number, p: number, seed: number, note?: string): KernelCase {
  const x = once(() => rand(n, n + 7, 3))
  return {
    name: `n ${n}, p ${p}, seed ${seed}${note === undefined ? "" : ` (${note})`}`,
    dtype: "f32",
    deterministic: true,
    setup(rt) {
      const t = rt.upload(x())
      return launcher(rt, [t], () => ({ out: dropout(rt, t, p, seed) }))
    },
    expected: once(() => ({ out: { want: dropoutRef(x(), p, seed), tol: {} } })),
  }
}

export const dropoutOp: KernelOp = {
  op: "dropout",
  variants: () => SINGLE,
  cases: () => [
    dropoutCase(1000, 0.1, 7),
    dropoutCase(4099, 0.5, 0xffffffff, "the largest seed"),
    dropoutCase(64, 0, 3, "p 0 keeps everything"),
    dropoutCase(777, 0.95, 12345),
    dropoutCase(65535 * 64 + 37, 0.3, 1, "past 65535 workgroups: grid-stride loop"),
  ],
}
