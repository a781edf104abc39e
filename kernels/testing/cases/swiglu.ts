/** Table cases of SwiGLU: silu(gate)·up. */
import { swiglu } from "../../swiglu.ts"
import { swigluRef } from "../../swiglu.ref.ts"
import type { Tolerance } from "../compare.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

function swigluCase(name: string, shape: readonly number[], inputs: () => { gate: Float32Array; up: Float32Array }, tol: Tolerance): KernelCase {
  const host = once(inputs)
  return {
    name,
    dtype: "f32",
    setup(rt) {
      const { gate, up } = host()
      const tg = rt.upload(gate, shape), tu = rt.upload(up, shape)
      return launcher(rt, [tg, tu], () => ({ y: expectShapeOf("swiglu", "output", swiglu(rt, tg, tu), shape) }))
    },
    expected: once(() => {
      const { gate, up } = host()
      return { y: { want: swigluRef(gate, up), tol } }
    }),
  }
}

/** f32 exp and divide give a few ulps relative to each element. */
export const swigluRandomCase = (shape: readonly [number, number], scale: number): KernelCase =>
  swigluCase(`${shape.join("×")} |gate| ≤ ${scale}`, shape, () => ({ gate: rand(shape[0] * shape[1], 11, scale), up: rand(shape[0] * shape[1], 12, 3) }), { rel: 2e-6, floor: 1e-30 })

export const swigluOp: KernelOp = {
  op: "swiglu",
  variants: () => SINGLE,
  cases: () => [
    swigluRandomCase([7, 36], 8),
    swigluRandomCase([3, 131], 8),
    swigluRandomCase([2, 1000], 30),
    // No overflow: silu(x) → x for x ≫ 0 and → 0⁻ for x ≪ 0. Absolute floor: llvmpipe flushes denormals
    // (silu(−88.8) ≈ −2.4e-37 needs exp(−88.8), a denormal).
    swigluCase("large |gate| up to 3e38, ±0, 1e-30", [13], () => {
      const gate = Float32Array.from([1e4, -1e4, 3e38, -3e38, 88.8, -88.8, 100, -100, 0, -0, 1e-30, -20, 20])
      return { gate, up: new Float32Array(gate.length).fill(1) }
    }, { rel: 2e-6, abs: 1e-35 }),
  ],
}
