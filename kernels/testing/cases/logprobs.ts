/** Table cases of log-softmax rows: log p(target) and the row logsumexp. */
import { logprobsFromLogits, logsumexpRows } from "../../logprobs.ts"
import { logprobsRef, logsumexpRowsRef } from "../../logprobs.ref.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { uniform } from "../random.ts"

export interface LogprobsParams {
  readonly T: number
  readonly V: number
  readonly scale: number
  readonly offset: number
  readonly note?: string
}

export function logprobsCase(c: LogprobsParams): KernelCase {
  const host = once(() => {
    const r = uniform(c.V + c.T)
    const logits = new Float32Array(c.T * c.V).map(() => c.offset + (r() * 2 - 1) * c.scale)
    // Targets: the row's argmax for row 0 (logprob near 0), random otherwise, the last column once.
    const targets = Uint32Array.from({ length: c.T }, (_, t) => (t === 1 ? c.V - 1 : Math.floor(r() * c.V)))
    let best = 0
    for (let v = 1; v < c.V; v++) if (logits[v]! > logits[best]!) best = v
    targets[0] = best
    return { logits, targets }
  })
  return {
    name: `T ${c.T} V ${c.V} logits ${c.offset} ± ${c.scale}${c.note === undefined ? "" : ` (${c.note})`}`,
    dtype: "f32",
    setup(rt) {
      const { logits, targets } = host()
      const tl = rt.upload(logits, [c.T, c.V]), tt = rt.upload(targets)
      return launcher(rt, [tl, tt], () => ({
        logprobs: expectShapeOf("logprobs", "output", logprobsFromLogits(rt, tl, tt), [c.T]),
        logsumexp: expectShapeOf("logsumexpRows", "output", logsumexpRows(rt, tl), [c.T]),
      }))
    },
    expected: once(() => {
      const { logits, targets } = host()
      // ~4 f32 ulps of the logits' scale (measured ≤ 1e-6 at ±10). Inputs are f32, so the result's
      // absolute error scales with the magnitude (ulp(3e4) ≈ 2e-3).
      const abs = 5e-7 * Math.max(4, Math.abs(c.offset) + c.scale)
      return {
        logprobs: { want: logprobsRef(logits, c.V, targets), tol: { abs } },
        logsumexp: { want: logsumexpRowsRef(logits, c.V), tol: { abs } },
      }
    }),
  }
}

/** Rows of −3e38 (masked) with one live entry, and one dominant pair: log p = 0, and log 1/4 at 1e4. */
function maskedCase(): KernelCase {
  const V = 64
  return {
    name: "rows of -3e38 with one live entry, and a dominant pair at 1e4",
    dtype: "f32",
    setup(rt) {
      const logits = new Float32Array(2 * V).fill(-3e38)
      logits[5] = 0 // row 0: a single live entry → log p = 0
      logits[V + 1] = 1e4
      logits[V + 2] = 1e4 - Math.log(3) // row 1: p = 3/4, 1/4
      const tl = rt.upload(logits, [2, V]), tt = rt.upload(Uint32Array.from([5, 2]))
      return launcher(rt, [tl, tt], () => ({ lp: logprobsFromLogits(rt, tl, tt) }), {
        view: ({ lp }) => ({ "row 0": lp!.subarray(0, 1), "row 1": lp!.subarray(1, 2) }),
      })
    },
    expected: () => ({
      "row 0": { want: [0], tol: { abs: 1e-6 } },
      "row 1": { want: [Math.log(1 / 4)], tol: { abs: 2e-3 } },
    }),
  }
}

export const logprobsOp: KernelOp = {
  op: "logprobs",
  variants: () => SINGLE,
  cases: () => [
    logprobsCase({ T: 5, V: 256, scale: 4, offset: 0 }),
    logprobsCase({ T: 3, V: 1000, scale: 10, offset: 0 }),
    logprobsCase({ T: 3, V: 32000, scale: 8, offset: 0 }),
    logprobsCase({ T: 7, V: 1001, scale: 5, offset: 0, note: "scalar path" }),
    logprobsCase({ T: 2, V: 3, scale: 1, offset: 0, note: "fewer columns than invocations" }),
    // Large magnitudes: exp(x) would overflow f32 without the running max.
    logprobsCase({ T: 4, V: 32000, scale: 200, offset: 3e4 }),
    logprobsCase({ T: 4, V: 517, scale: 2000, offset: -5e4 }),
    maskedCase(),
  ],
}
