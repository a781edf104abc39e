/** Table cases of the token embedding lookup (exact: a copy of rows, zeros for out-of-vocabulary ids). */
import { embed, embedFromWeight } from "../../embedding.ts"
import { embedRef } from "../../embedding.ref.ts"
import { type Weight, prepareWeight, prepareWeight16, releaseWeight } from "../../matmul.ts"
import { uploadHalf } from "../../pack16.ts"
import { unpackHalfRef } from "../../pack16.ref.ts"
import type { Half, Tensor } from "../../tensor.ts"
import { f32ToBf16, f32ToF16 } from "../../../common/safetensors.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export interface EmbeddingParams {
  readonly V: number
  readonly D: number
  readonly T: number
  /** Splits the table into row ranges bound at offsets (as a table past the binding limit is). */
  readonly maxBindingBytes?: number
  /** A 16-bit table (as a file stores it). */
  readonly half?: Half
  /**
   * Looks rows up from the table prepared as a linear layer's weight (a tied head), in this storage and
   * in parts of `partCols` rows (default: as the limits allow): the same bits as the table itself.
   */
  readonly weight?: { readonly storage: "texture" | "buffer"; readonly partCols?: number }
  readonly note?: string
}

export function embeddingCase(c: EmbeddingParams): KernelCase {
  const host = once(() => ({
    table: rand(c.V * c.D, c.V + c.D),
    // Ids cover the first/last rows, every chunk, and two out-of-vocabulary ids.
    ids: Uint32Array.from({ length: c.T }, (_, t) => (t === 0 ? c.V - 1 : t === 1 ? c.V : t === 2 ? 0xffffffff : (t * 7919) % c.V)),
  }))
  return {
    name: `V ${c.V} D ${c.D} T ${c.T}${c.half === undefined ? "" : `, ${c.half} table`}${c.maxBindingBytes === undefined ? "" : `, chunks ≤ ${c.maxBindingBytes} B`}${weightLabel(c.weight)}${c.note === undefined ? "" : ` (${c.note})`}`,
    dtype: "f32",
    // the table's lookup and the weight's read the same values
    sameBits: `V ${c.V} D ${c.D} T ${c.T} ${c.half ?? "f32"}`,
    applies: (_v, rt) => c.weight?.storage !== "texture" || Math.ceil(c.D / 4) * 4 + 1 <= rt.limits.maxTextureDimension2D,
    setup(rt) {
      const { table, ids } = host()
      if (c.weight !== undefined) {
        const opts = { storage: c.weight.storage, ...(c.weight.partCols === undefined ? {} : { partCols: c.weight.partCols }) }
        const w: Weight = c.half === undefined ? prepareWeight(rt, table, c.V, c.D, opts) : prepareWeight16(rt, bitsOf(table, c.half), c.half, c.V, c.D, opts)
        if (c.weight.partCols !== undefined && w.parts.length < 2) throw new Error(`embedding case: ${c.V} rows in parts of ${c.weight.partCols} gave ${w.parts.length} part`)
        const ti = rt.upload(ids)
        rt.release(rt.upload(new Float32Array(c.T * c.D).fill(9), [c.T, c.D]))
        return launcher(rt, [ti], () => ({ rows: expectShapeOf("embedFromWeight", "output", embedFromWeight(rt, w, ti), [c.T, c.D]) }), { cleanup: () => releaseWeight(rt, w) })
      }
      const tt = c.half === undefined ? rt.upload(table, [c.V, c.D]) : uploadHalf(rt, bitsOf(table, c.half), [c.V, c.D], c.half)
      const ti = rt.upload(ids)
      // Pre-fill the pooled output buffer with garbage so the zero rows are really written.
      rt.release(rt.upload(new Float32Array(c.T * c.D).fill(9), [c.T, c.D]))
      const opts = c.maxBindingBytes === undefined ? {} : { maxBindingBytes: c.maxBindingBytes }
      const run = () => ({ rows: expectShapeOf("embed", "output", embed(rt, tt, ti, opts), [c.T, c.D]) })
      // a 16-bit table is not a Tensor: its buffer goes back to the pool at release
      return "dtype" in tt && (tt.dtype === "f16" || tt.dtype === "bf16") ? launcher(rt, [ti], run, { cleanup: () => rt.releaseBuffer(tt.buffer) }) : launcher(rt, [tt as Tensor, ti], run)
    },
    expected: once(() => {
      const { table, ids } = host()
      // a 16-bit table's values are what its bits say (decoded independently), widened exactly
      const values = c.half === undefined ? table : unpackHalfRef(new Uint32Array(bitsOf(table, c.half).buffer), c.half)
      return { rows: { want: embedRef(values, c.V, c.D, ids), tol: {}, shape: [c.T, c.D] } }
    }),
  }
}

const weightLabel = (w: EmbeddingParams["weight"]): string =>
  w === undefined ? "" : `, from a ${w.storage} weight${w.partCols === undefined ? "" : ` in parts of ${w.partCols} rows`}`

const bitsOf = (table: Float32Array, half: Half): Uint16Array => (half === "bf16" ? f32ToBf16(table) : f32ToF16(table))

const halfOf = (h: string | undefined): { readonly half?: Half } => (h === undefined ? {} : { half: h as Half })

export const embeddingOp: KernelOp = {
  op: "embedding",
  variants: () => SINGLE,
  cases: () => [
    embeddingCase({ V: 50, D: 64, T: 13 }),
    embeddingCase({ V: 37, D: 36, T: 70 }),
    embeddingCase({ V: 11, D: 7, T: 9, note: "scalar path" }),
    embeddingCase({ V: 100, D: 12, T: 30, maxBindingBytes: 1024, note: "48-byte rows, 256-byte alignment: 7 chunks of 16 rows" }),
    embeddingCase({ V: 100, D: 5, T: 30, maxBindingBytes: 1280, note: "20-byte rows: 2 chunks of 64 rows, scalar path" }),
    embeddingCase({ V: 50, D: 64, T: 13, half: "bf16" }),
    embeddingCase({ V: 37, D: 6, T: 70, half: "f16" }),
    embeddingCase({ V: 100, D: 12, T: 30, maxBindingBytes: 1024, half: "bf16", note: "24-byte rows: 4 chunks of 32 rows" }),
    // from a prepared weight (a tied head), each against the table case of the same values above, bit for bit
    ...(["texture", "buffer"] as const).flatMap((storage) =>
      [undefined, "bf16", "f16"].flatMap((half) => [
        ...(half === "f16" ? [] : [embeddingCase({ V: 50, D: 64, T: 13, ...halfOf(half), weight: { storage } })]),
        embeddingCase({ V: 37, D: 6, T: 70, ...halfOf(half), weight: { storage } }),
        embeddingCase({ V: 37, D: 6, T: 70, ...halfOf(half), weight: { storage, partCols: 16 }, note: "3 parts, the last 5 rows wide" }),
      ]),
    ),
    embeddingCase({ V: 37, D: 6, T: 70, note: "the table whose weight cases follow" }),
    embeddingCase({ V: 37, D: 6, T: 70, half: "bf16", note: "the table whose weight cases follow" }),
    embeddingCase({ V: 11, D: 7, T: 9, weight: { storage: "buffer" }, note: "odd width" }),
    embeddingCase({ V: 11, D: 7, T: 9, weight: { storage: "texture" }, note: "odd width" }),
  ],
}
