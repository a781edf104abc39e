/** Table cases of the sum of squares over many tensors (the global gradient norm), under both profiles. */
import type { AdapterProfile } from "../../runtime.ts"
import { sumSquares } from "../../sumsq.ts"
import { clipCoefRef, sumSquaresRef } from "../../sumsq.ref.ts"
import type { Tensor } from "../../tensor.ts"
import { type KernelCase, type KernelOp, type Variant, once, withProfile, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export interface SumsqVariant extends Variant {
  readonly profile: AdapterProfile
}

/** The workgroup count per tensor follows the adapter's profile: each case runs as llvmpipe and as a real GPU would. */
export const SUMSQ_VARIANTS: readonly SumsqVariant[] = [
  { name: "cpu profile (64 workgroups at most)", profile: "cpu" },
  { name: "gpu profile (1024 workgroups at most)", profile: "gpu" },
]

export interface SumsqParams {
  readonly sizes: readonly number[]
  /** Tensor i holds values in ±(i + 1)·scale. */
  readonly scale?: number
  /** Relative tolerance of the sum. */
  readonly rel: number
  /** Records a reduction of unrelated work first, in the same batch. */
  readonly otherWorkFirst?: boolean
  readonly seed: number
  readonly note?: string
  readonly sameBits?: string
}

export function sumsqCase(c: SumsqParams): KernelCase<SumsqVariant> {
  const host = once(() => ({
    tensors: c.sizes.map((n, i) => rand(n, c.seed * 100 + i, (i + 1) * (c.scale ?? 1))),
    noise: rand(1000, c.seed * 100 + 99),
  }))
  return {
    name: `${c.sizes.length === 0 ? "no tensors" : `tensors of ${c.sizes.join(", ")}`}${c.otherWorkFirst === true ? ", other work batched before it" : ""}${c.note === undefined ? "" : ` (${c.note})`}`,
    dtype: "f32",
    ...(c.sameBits !== undefined ? { sameBits: c.sameBits } : {}),
    setup(root, v) {
      const rt = withProfile(root, v.profile)
      const { tensors, noise } = host()
      const ts = tensors.map((h) => rt.upload(h))
      const noiseT = c.otherWorkFirst === true ? rt.upload(noise) : undefined
      return launcher(rt, [...ts, noiseT], () => {
        if (noiseT !== undefined) rt.release(sumSquares(rt, [noiseT])) // safe mid-batch: the pool hands it out in order
        return { sum: sumSquares(rt, ts) }
      })
    },
    expected: once(() => ({
      // f32 sums of ≤ ~800 terms per invocation, then trees: relative error well under 1e-5.
      sum: { want: [sumSquaresRef(host().tensors)], tol: c.rel === 0 ? {} : { rel: c.rel } },
    })),
  }
}

export const sumsqOp: KernelOp<SumsqVariant> = {
  op: "sumsq",
  variants: () => SUMSQ_VARIANTS,
  cases: () => [
    sumsqCase({ sizes: [1, 3, 4, 17, 1024, 4099, 200_000, 65], rel: 1e-5, seed: 3, note: "vec4 and scalar, tiny and large" }),
    sumsqCase({ sizes: [4], rel: 1e-6, seed: 3, note: "one tensor alone" }),
    sumsqCase({ sizes: [], rel: 0, seed: 1, note: "gives 0" }),
    sumsqCase({ sizes: [300_001, 4096, 5], rel: 1e-5, seed: 4, sameBits: "deterministic" }),
    sumsqCase({ sizes: [300_001, 4096, 5], rel: 1e-5, seed: 4, sameBits: "deterministic", otherWorkFirst: true }),
  ],
  references: [
    {
      name: "clipCoefRef is torch's clip_grad_norm_ coefficient min(1, max / (norm + 1e-6))",
      run: () => ({ coef: { got: [clipCoefRef(0.5, 1), clipCoefRef(4, 1)], want: [1, 1 / (4 + 1e-6)], tol: { abs: 5e-16 } } }),
    },
  ],
}
