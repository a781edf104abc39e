/** Table cases of the cross-entropy backward (d logits of a weighted mean of −log p(target)). */
import { crossEntropyBackward } from "../../cross-entropy-backward.ts"
import { crossEntropyBackwardRef, crossEntropyRef } from "../../cross-entropy-backward.ref.ts"
import { fdGrad } from "../gradcheck.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

const MASKED_ROW = 3

/** Targets in [0, V), rows i ≡ 3 (mod 5) masked (weight 0), the rest 1/N: HF's mean over non-ignored labels. */
function labels(T: number, V: number, seed: number): { targets: Uint32Array; w: Float32Array } {
  const r = rand(T, seed)
  const targets = Uint32Array.from(r, (x) => Math.floor(((x + 1) / 2) * V * 0.999))
  const masked = (i: number): boolean => i % 5 === MASKED_ROW
  let n = 0
  for (let i = 0; i < T; i++) if (!masked(i)) n++
  const w = Float32Array.from({ length: T }, (_, i) => (masked(i) ? 0 : 1 / n))
  return { targets, w }
}

export function crossEntropyBackwardCase(T: number, V: number, scale: number): KernelCase {
  const host = once(() => {
    const logits = rand(T * V, V + T, scale)
    const { targets, w } = labels(T, V, T)
    targets[1] = V - 1 // last column, the tail lane of a vec4
    return { logits, targets, w }
  })
  return {
    name: `T ${T} V ${V}, |logits| ≤ ${scale}, row ${MASKED_ROW} masked`,
    dtype: "f32",
    setup(rt) {
      const { logits, targets, w } = host()
      const tl = rt.upload(logits, [T, V]), tt = rt.upload(targets), tw = rt.upload(w)
      return launcher(rt, [tl, tt, tw], () => ({ dlogits: expectShapeOf("crossEntropyBackward", "output", crossEntropyBackward(rt, tl, tt, tw), [T, V]) }), {
        view: ({ dlogits }) => ({ dlogits: dlogits!, "masked row": dlogits!.subarray(MASKED_ROW * V, (MASKED_ROW + 1) * V) }),
      })
    },
    expected: once(() => {
      const { logits, targets, w } = host()
      return {
        dlogits: { want: crossEntropyBackwardRef(logits, V, targets, w), tol: { scaled: 1e-5 }, shape: [T, V] },
        "masked row": { want: new Float64Array(V), tol: {} },
      }
    }),
  }
}

export const crossEntropyBackwardOp: KernelOp = {
  op: "cross-entropy-backward",
  variants: () => SINGLE,
  cases: () => [crossEntropyBackwardCase(7, 300, 5), crossEntropyBackwardCase(37, 301, 20), crossEntropyBackwardCase(5, 1024, 60)],
  references: [
    {
      name: "backward matches central differences of crossEntropyRef (T 7, V 30)",
      run() {
        const T = 7, V = 30
        const logits = Float64Array.from(rand(T * V, 1, 5))
        const { targets, w } = labels(T, V, 2)
        const fd = fdGrad(logits, () => crossEntropyRef(logits, V, targets, w))
        return { dlogits: { got: crossEntropyBackwardRef(logits, V, targets, w), want: fd, tol: { scaled: 1e-7 } } }
      },
    },
  ],
}
