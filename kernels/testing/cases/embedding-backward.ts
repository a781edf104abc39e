/** Table cases of the embedding backward (deterministic scatter-add), both methods. */
import { type EmbeddingBackwardOptions, embeddingBackward } from "../../embedding-backward.ts"
import { embeddingBackwardRef } from "../../embedding-backward.ref.ts"
import { embedRef } from "../../embedding.ref.ts"
import { dotLoss, fdGrad } from "../gradcheck.ts"
import { type KernelCase, type KernelOp, type Variant, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export interface EmbeddingBackwardVariant extends Variant {
  readonly method: NonNullable<EmbeddingBackwardOptions["method"]>
}

/** The wrapper picks whichever reads fewer ids for the shape; the table forces each on every shape. */
export const EMBEDDING_BACKWARD_VARIANTS: readonly EmbeddingBackwardVariant[] = [
  { name: "per-token chains (links)", method: "links" },
  { name: "per-row scans (rows)", method: "rows" },
]

/** Ids with many repeats (a small alphabet) and every 11th id out of vocabulary. */
function idsFor(T: number, V: number, seed: number, alphabet: number): Uint32Array {
  const r = rand(T, seed)
  return Uint32Array.from(r, (x, t) => (t % 11 === 10 ? V + t : Math.floor(((x + 1) / 2) * alphabet) * Math.floor(V / alphabet)))
}

export interface EmbeddingBackwardParams {
  readonly T: number
  readonly V: number
  readonly D: number
  /** Distinct in-vocabulary ids. */
  readonly alphabet: number
  readonly maxBindingBytes?: number
  /** Scale of dOut (large values make any change of summation order show in the bits). */
  readonly gradScale?: number
  /** Start from a zero table instead of random values. */
  readonly zeroTable?: boolean
  readonly note?: string
  readonly deterministic?: boolean
  readonly sameBits?: string
}

export function embeddingBackwardCase(c: EmbeddingBackwardParams): KernelCase<EmbeddingBackwardVariant> {
  const { T, V, D } = c
  const host = once(() => ({
    dTable0: c.zeroTable === true ? new Float32Array(V * D) : rand(V * D, 3 + T),
    dOut: rand(T * D, 4 + T, c.gradScale ?? 1),
    ids: idsFor(T, V, T + D, c.alphabet),
  }))
  return {
    name: `T ${T} V ${V} D ${D}, ${c.alphabet} distinct ids${c.maxBindingBytes === undefined ? "" : `, row ranges ≤ ${c.maxBindingBytes} B`}${c.note === undefined ? "" : ` (${c.note})`}`,
    dtype: "f32",
    ...(c.deterministic === true ? { deterministic: true } : {}),
    ...(c.sameBits !== undefined ? { sameBits: c.sameBits } : {}),
    setup(rt, v) {
      const { dTable0, dOut, ids } = host()
      const tTable = rt.upload(dTable0, [V, D]), tIds = rt.upload(ids), tOut = rt.upload(dOut, [T, D])
      const opts = { method: v.method, ...(c.maxBindingBytes === undefined ? {} : { maxBindingBytes: c.maxBindingBytes }) }
      return launcher(rt, [tTable, tIds, tOut], () => {
        embeddingBackward(rt, tTable, tIds, tOut, opts)
        return { dTable: tTable }
      })
    },
    expected: once(() => {
      const { dTable0, dOut, ids } = host()
      return { dTable: { want: embeddingBackwardRef(dTable0, V, D, ids, dOut), tol: { scaled: 1e-6 }, shape: [V, D] } }
    }),
  }
}

export const embeddingBackwardOp: KernelOp<EmbeddingBackwardVariant> = {
  op: "embedding-backward",
  variants: () => EMBEDDING_BACKWARD_VARIANTS,
  variantsAgree: true,
  cases: () => [
    embeddingBackwardCase({ T: 7, V: 300, D: 24, alphabet: 3 }),
    embeddingBackwardCase({ T: 37, V: 300, D: 40, alphabet: 5, maxBindingBytes: 8 * 160 * 3, note: "row ranges of 24 rows" }),
    embeddingBackwardCase({ T: 37, V: 301, D: 37, alphabet: 300, note: "scalar path" }),
    embeddingBackwardCase({ T: 200, V: 300, D: 72, alphabet: 7, note: "several column blocks, long chains" }),
    // Splitting the table into row ranges must not change a bit either: 8 rows of 160 bytes, or 64 of
    // 148 (D 37 rows align every 64; V 150 gives two ranges).
    embeddingBackwardCase({ T: 90, V: 20, D: 40, alphabet: 6, gradScale: 1e3, sameBits: "D 40" }),
    embeddingBackwardCase({ T: 90, V: 20, D: 40, alphabet: 6, gradScale: 1e3, sameBits: "D 40", maxBindingBytes: 8 * 160 }),
    embeddingBackwardCase({ T: 90, V: 150, D: 37, alphabet: 6, gradScale: 1e3, sameBits: "D 37" }),
    embeddingBackwardCase({ T: 90, V: 150, D: 37, alphabet: 6, gradScale: 1e3, sameBits: "D 37", maxBindingBytes: 64 * 148 }),
    embeddingBackwardCase({ T: 64, V: 16, D: 8, alphabet: 4, gradScale: 1e3, zeroTable: true, deterministic: true }),
  ],
  references: [
    {
      name: "embeddingBackwardRef matches central differences of embedRef (T 7, V 30, D 24)",
      run() {
        const T = 7, V = 30, D = 24
        const table = Float64Array.from(rand(V * D, 1)), g = rand(T * D, 2)
        const ids = Uint32Array.from([3, 5, 3, 29, 31, 3, 0])
        const fd = fdGrad(table, () => dotLoss(g, embedRef(table, V, D, ids)))
        return { dTable: { got: embeddingBackwardRef(new Float64Array(V * D), V, D, ids, g), want: fd, tol: { scaled: 1e-8 } } }
      },
    },
  ],
}
