/** Table cases of training attention: the forward with logsumexp, and its backward (dq, dk, dv). */
import { type StreamSource, attentionBackward, attentionTrain, trainCandidates } from "../../attention-backward.ts"
import { type TrainAttentionRefOptions, attentionBackwardRef, attentionTrainRef } from "../../attention-backward.ref.ts"
import { attentionRef } from "../../attention.ref.ts"
import type { Tolerance } from "../compare.ts"
import { dotLoss, fdGrad } from "../gradcheck.ts"
import { type KernelCase, type KernelOp, type ReferenceCheck, type Variant, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

/** Document ids for packed sequences: documents of the given lengths, back to back. */
const docs = (lengths: readonly number[]): Uint32Array => Uint32Array.from(lengths.flatMap((n, i) => Array<number>(n).fill(i)))

type Output = "o" | "lse" | "dq" | "dk" | "dv"

/** Where the streamed operands come from and which of the tuner's tiling candidates runs (default: the kernel's choice). */
export interface TrainAttentionVariant extends Variant {
  readonly stream?: StreamSource
  /** Index into each kernel's trainCandidates(kernel, headDim). */
  readonly candidate?: number
}

export const TRAIN_ATTENTION_VARIANTS: readonly TrainAttentionVariant[] = [
  { name: "default" },
  ...(["buffer", "texture"] as const).flatMap((stream) =>
    [0, 1].map((candidate): TrainAttentionVariant => ({ name: `streamed from ${stream === "buffer" ? "storage" : "textures"}, tiling candidate ${candidate + 1}`, stream, candidate })),
  ),
]

/** The options a variant forces for a head size (undefined: no kernel has that many candidates). */
function forced(v: TrainAttentionVariant, headDim: number): { stream?: StreamSource; candidate?: number } | undefined {
  const most = Math.max(...(["forward", "dq", "dkdv"] as const).map((k) => trainCandidates(k, headDim).length))
  if (v.candidate !== undefined && v.candidate >= most) return undefined
  return { ...(v.stream === undefined ? {} : { stream: v.stream }), ...(v.candidate === undefined ? {} : { candidate: v.candidate }) }
}

export interface TrainAttentionParams {
  readonly T: number
  readonly heads: number
  readonly kvHeads: number
  readonly headDim: number
  /** Packed documents of these lengths (segments); default one sequence. */
  readonly lengths?: readonly number[]
  readonly note?: string
  readonly slow?: boolean
  readonly deterministic?: boolean
  /** Per-output tolerances in place of the default (1e-5 of each tensor's scale). */
  readonly tol?: Partial<Record<Output, Tolerance>>
}

export function trainAttentionCase(p: TrainAttentionParams): KernelCase<TrainAttentionVariant> {
  const { T, heads, kvHeads, headDim } = p
  const host = once(() => ({
    q: rand(T * heads * headDim, T + 1, 2),
    k: rand(T * kvHeads * headDim, T + 2, 2),
    v: rand(T * kvHeads * headDim, T + 3),
    dO: rand(T * heads * headDim, T + 4),
    seg: p.lengths === undefined ? undefined : docs(p.lengths),
  }))
  const name = `T ${T} heads ${heads}/${kvHeads} d ${headDim}${p.lengths === undefined ? "" : ` documents ${p.lengths.join("+")}`}${p.note === undefined ? "" : ` (${p.note})`}`
  return {
    name,
    dtype: "f32",
    ...(p.slow === true ? { slow: true } : {}),
    ...(p.deterministic === true ? { deterministic: true } : {}),
    // Each head size, tiling and source is a new set of shaders: the forced variants are compared at d 16,
    // where they compile in seconds (wider heads take minutes cold on a busy machine).
    applies: (variant) => variant.name === "default" || (headDim <= 16 && forced(variant, headDim) !== undefined),
    setup(rt, variant) {
      const { q, k, v, dO, seg } = host()
      const tq = rt.upload(q, [T, heads * headDim]), tk = rt.upload(k, [T, kvHeads * headDim]), tv = rt.upload(v, [T, kvHeads * headDim])
      const tdo = rt.upload(dO, [T, heads * headDim])
      const tseg = seg === undefined ? undefined : rt.upload(seg)
      const opts = { heads, kvHeads, headDim, ...(tseg === undefined ? {} : { segments: tseg }), ...forced(variant, headDim) }
      return launcher(rt, [tq, tk, tv, tdo, tseg], () => {
        const { o, lse } = attentionTrain(rt, tq, tk, tv, opts)
        const { dq, dk, dv } = attentionBackward(rt, tq, tk, tv, o, lse, tdo, opts)
        expectShapeOf("attentionTrain", "o", o, [T, heads * headDim])
        expectShapeOf("attentionTrain", "lse", lse, [T, heads])
        expectShapeOf("attentionBackward", "dk", dk, [T, kvHeads * headDim])
        return { o, lse, dq, dk, dv }
      })
    },
    expected: once(() => {
      const { q, k, v, dO, seg } = host()
      const o: TrainAttentionRefOptions = { T, heads, kvHeads, headDim, ...(seg === undefined ? {} : { segments: seg }) }
      const fwd = attentionTrainRef(q, k, v, o)
      const bwd = attentionBackwardRef(q, k, v, dO, o)
      const tol = (n: Output): Tolerance => p.tol?.[n] ?? { scaled: 1e-5 }
      const qShape = [T, heads * headDim], kShape = [T, kvHeads * headDim]
      return {
        o: { want: fwd.o, tol: tol("o"), shape: qShape },
        lse: { want: fwd.lse, tol: tol("lse"), shape: [T, heads] },
        dq: { want: bwd.dq, tol: tol("dq"), shape: qShape },
        dk: { want: bwd.dk, tol: tol("dk"), shape: kShape },
        dv: { want: bwd.dv, tol: tol("dv"), shape: kShape },
      }
    }),
  }
}

function fdCheck(name: string, o: TrainAttentionRefOptions): ReferenceCheck {
  return {
    name: `backward matches central differences of the forward (T ${o.T}, ${name})`,
    run() {
      const { T, heads, kvHeads, headDim } = o
      const q = Float64Array.from(rand(T * heads * headDim, 1, 2)), k = Float64Array.from(rand(T * kvHeads * headDim, 2, 2))
      const v = Float64Array.from(rand(T * kvHeads * headDim, 3)), g = rand(T * heads * headDim, 4)
      const loss = (): number => dotLoss(g, attentionTrainRef(q, k, v, o).o)
      const want = attentionBackwardRef(q, k, v, g, o)
      const tol = { scaled: 1e-7 }
      return {
        dq: { got: want.dq, want: fdGrad(q, loss), tol },
        dk: { got: want.dk, want: fdGrad(k, loss), tol },
        dv: { got: want.dv, want: fdGrad(v, loss), tol },
      }
    },
  }
}

// Each head size is a new set of shaders, compiled by LLVM at first use (cold, 2 shared cores: ~2 s at
// d 16, ~20 s at d 64, ~25 s at d 128; Mesa's disk cache makes later runs fast), so the wide heads are
// `slow` cases.
export const attentionBackwardOp: KernelOp<TrainAttentionVariant> = {
  op: "attention-backward",
  variants: () => TRAIN_ATTENTION_VARIANTS,
  // Each row's sums run over the same keys in the same order whatever the rows or the operands' source.
  variantsAgree: true,
  cases: () => [
    trainAttentionCase({ T: 37, heads: 4, kvHeads: 2, headDim: 16, note: "GQA" }),
    trainAttentionCase({ T: 150, heads: 2, kvHeads: 2, headDim: 16, note: "several workgroups per head" }),
    trainAttentionCase({ T: 37, heads: 3, kvHeads: 1, headDim: 16, lengths: [5, 20, 12], note: "MQA, packed documents" }),
    trainAttentionCase({ T: 150, heads: 2, kvHeads: 1, headDim: 16, lengths: [1, 60, 30, 59], note: "documents across workgroups" }),
    trainAttentionCase({ T: 100, heads: 4, kvHeads: 2, headDim: 16, lengths: [3, 7, 1, 1, 9, 20, 2, 40, 4, 13], note: "many short documents" }),
    trainAttentionCase({ T: 37, heads: 2, kvHeads: 1, headDim: 24, note: "head not a power of two" }),
    trainAttentionCase({ T: 50, heads: 4, kvHeads: 2, headDim: 16, deterministic: true }),
    // One token: o = v, dq = dk = 0 (softmax over one key has zero gradient), dv = dO summed over the group.
    trainAttentionCase({
      T: 1, heads: 4, kvHeads: 2, headDim: 16, note: "a single token",
      tol: { o: { scaled: 1e-6 }, dq: { abs: 1e-6 }, dk: { abs: 1e-6 }, dv: { scaled: 1e-6 } },
    }),
    trainAttentionCase({ T: 70, heads: 2, kvHeads: 2, headDim: 64, lengths: [30, 40], slow: true }),
    trainAttentionCase({ T: 9, heads: 2, kvHeads: 1, headDim: 128, note: "widest head tested", slow: true }),
  ],
  references: [
    fdCheck("GQA 4/2, d 8", { T: 7, heads: 4, kvHeads: 2, headDim: 8 }),
    fdCheck("MQA 3/1, d 4, two documents, scale 0.7", { T: 7, heads: 3, kvHeads: 1, headDim: 4, scale: 0.7, segments: docs([3, 4]) }),
    {
      name: "the training forward reference agrees with the inference attention reference",
      run() {
        const q = rand(9 * 32, 5), k = rand(9 * 16, 6), v = rand(9 * 16, 7)
        const got = attentionTrainRef(q, k, v, { T: 9, heads: 4, kvHeads: 2, headDim: 8 }).o
        const want = attentionRef(q, k, v, { tq: 9, tk: 9, heads: 4, kvHeads: 2, headDim: 8, queryOffset: 0 })
        return { o: { got, want, tol: { scaled: 1e-12 } } }
      },
    },
  ],
}
