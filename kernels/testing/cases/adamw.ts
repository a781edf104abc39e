/** Table cases of the AdamW step: two steps checked by hand, and ten against the float64 reference. */
import { ADAMW_DEFAULTS, type AdamWHyper, adamwStep, adamwUniforms } from "../../adamw.ts"
import { adamwRef } from "../../adamw.ref.ts"
import { type KernelCase, type KernelOp, SINGLE, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

/** The first Adam step moves each weight by lr·sign(g) after decay; the second is worked out by hand for element 0. */
function byHandCase(): KernelCase {
  const h: AdamWHyper = { ...ADAMW_DEFAULTS, weightDecay: 0.01 }
  return {
    name: "two steps by hand (n 5, decay 0.01, clip 0.5 on the second)",
    dtype: "f32",
    setup(rt) {
      const p = rt.upload(Float32Array.of(1, -2, 0.5, 3, 7))
      const g = rt.upload(Float32Array.of(0.5, -2, 0, 4, 1e-3))
      const m = rt.upload(new Float32Array(5)), v = rt.upload(new Float32Array(5))
      const after1 = [rt.tensor([5]), rt.tensor([5]), rt.tensor([5])] as const
      const run = () => {
        adamwStep(rt, p, g, m, v, adamwUniforms(h, 0.1, 1, 1))
        after1.forEach((dst, i) => rt.copy([p, m, v][i]!.buffer, 0, dst.buffer, 0, 20)) // in batch order
        adamwStep(rt, p, g, m, v, adamwUniforms(h, 0.1, 2, 0.5))
        return { "p after step 1": after1[0], "m after step 1": after1[1], "v after step 1": after1[2], p }
      }
      return launcher(rt, [p, g, m, v, ...after1], run, { view: ({ p: p2, ...rest }) => ({ ...rest, "p[0] after step 2": p2!.subarray(0, 1) }) })
    },
    expected: () => ({
      // t = 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + eps); decay multiplies p by 1 − 0.1·0.01.
      // 7·0.999 − 0.1·1e-3/(1e-3 + 1e-8): eps shows at |g| = 1e-3 (a 1e-5 relative change of the update).
      "p after step 1": { want: [0.899, -1.898, 0.4995, 2.897, 6.993 - 0.1 * (1e-3 / (1e-3 + 1e-8))], tol: { abs: 1e-6 } },
      "m after step 1": { want: [0.05, -0.2, 0, 0.4, 1e-4], tol: { abs: 1e-8 } },
      "v after step 1": { want: [0.00025, 0.004, 0, 0.016, 1e-9], tol: { rel: 1e-6, floor: 1e-12 } },
      // g = 0.5 again, clip 0.5 (g → 0.25): m = 0.9·0.05 + 0.1·0.25 = 0.07, v = 0.999·0.00025 + 0.001·0.0625
      // = 0.00031225, p = 0.899·0.999 − 0.1·(0.07/0.19)/(sqrt(0.00031225/0.001999) + 1e-8).
      "p[0] after step 2": { want: [0.899 * 0.999 - 0.1 * (0.07 / 0.19) / (Math.sqrt(0.00031225 / 0.001999) + 1e-8)], tol: { abs: 1e-6 } },
    }),
  }
}

const STEPS = 10
const H: AdamWHyper = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 }
/** Step t's gradient scale, clip coefficient and learning rate. */
const schedule = (t: number) => ({ scale: t % 3 === 0 ? 10 : 0.1, clip: t % 2 === 0 ? 0.37 : 1, lr: 1e-2 * (1 - t / 20) })

/** `steps` updates of n weights; the gradients change scale and clipping from step to step. */
export function adamwCase(n: number, note?: string): KernelCase {
  const host = once(() => ({ p0: rand(n, n), grads: Array.from({ length: STEPS }, (_, i) => rand(n, n + i + 1, schedule(i + 1).scale)) }))
  return {
    name: `${STEPS} steps, n ${n}${note === undefined ? "" : ` (${note})`}`,
    dtype: "f32",
    setup(rt) {
      const { p0, grads } = host()
      const p = rt.upload(p0), m = rt.upload(new Float32Array(n)), v = rt.upload(new Float32Array(n))
      const gs = grads.map((g) => rt.upload(g))
      const params = gs.map((_, i) => {
        const { clip, lr } = schedule(i + 1)
        return adamwUniforms(H, lr, i + 1, clip)
      })
      return launcher(rt, [p, m, v, ...gs], () => {
        gs.forEach((g, i) => adamwStep(rt, p, g, m, v, params[i]!))
        return { p, m, v }
      })
    },
    expected: once(() => {
      const { p0, grads } = host()
      const ref = { p: Float64Array.from(p0), m: new Float64Array(n), v: new Float64Array(n) }
      grads.forEach((g, i) => {
        const { clip, lr } = schedule(i + 1)
        adamwRef(ref, g, H, lr, i + 1, clip)
      })
      // f32 state rounded each step: |p| ≤ ~1.1, so ~10 roundings of ≤ 6e-8 plus the update's own error
      // (a few ulp of lr·|m̂/√v̂| ≤ ~1e-2) stay below 1e-6. Moments (|m| ≲ 1, v ≲ 5): a few ulp of their
      // scale, as absolute errors since m cancels towards 0.
      return { p: { want: ref.p, tol: { abs: 1e-6 } }, m: { want: ref.m, tol: { abs: 1e-6 } }, v: { want: ref.v, tol: { rel: 1e-6, floor: 1e-2 } } }
    }),
  }
}

export const adamwOp: KernelOp = {
  op: "adamw",
  variants: () => SINGLE,
  cases: () => [byHandCase(), adamwCase(1000, "vec4 path"), adamwCase(1001, "scalar path"), adamwCase(70001, "more than one stride for some invocations")],
}
