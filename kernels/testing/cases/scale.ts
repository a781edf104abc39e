/** Table cases of the in-place helpers: scale (x *= s), axpy (x += s·y), fill (x = s). */
import { axpyInPlace, fill, scaleInPlace } from "../../scale.ts"
import { axpyRef, scaleRef } from "../../scale.ref.ts"
import { type KernelCase, type KernelOp, SINGLE, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export function scaleCase(n: number, s: number, note?: string): KernelCase {
  const host = once(() => ({ x: rand(n, n + 1, 3), y: rand(n, n + 2, 3) }))
  return {
    name: `n ${n}, s ${s}${note === undefined ? "" : ` (${note})`}`,
    dtype: "f32",
    setup(rt) {
      const { x, y } = host()
      const sx = rt.upload(x), ax = rt.upload(x), ty = rt.upload(y)
      // NaN and Inf first: fill must overwrite them (zeroing gradients), where scaling by 0 would not.
      const fx = rt.upload(new Float32Array(n).map((_, i) => (i % 3 === 0 ? NaN : i % 3 === 1 ? Infinity : x[i]!)))
      return launcher(rt, [sx, ax, ty, fx], () => {
        scaleInPlace(rt, sx, s)
        axpyInPlace(rt, ax, ty, s)
        fill(rt, fx, s)
        return { scale: sx, axpy: ax, fill: fx }
      })
    },
    expected: once(() => {
      const { x, y } = host()
      return {
        // s goes to the kernel as f32 (half an ulp off), then one rounding (scale) or two (axpy: a product
        // and a sum), at |values| ≤ 3·(1 + |s|).
        scale: { want: scaleRef(x, s), tol: { rel: 2 ** -23 } },
        axpy: { want: axpyRef(x, y, s), tol: { abs: 4 * 2 ** -24 * 3 * (1 + Math.abs(s)) } },
        fill: { want: new Float64Array(n).fill(Math.fround(s)), tol: {} },
      }
    }),
  }
}

export const scaleOp: KernelOp = {
  op: "scale",
  variants: () => SINGLE,
  cases: () => [
    scaleCase(1, -0.37),
    scaleCase(7, 1.7, "scalar path"),
    scaleCase(1000, 0.1, "vec4 path"),
    scaleCase(1001, -3, "scalar path"),
    scaleCase(65535 * 64 + 37, 0.5, "scalar path past 65535 workgroups: grid-stride loop"),
  ],
}
