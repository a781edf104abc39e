/** Table cases of the token embedding lookup (exact: a copy of rows, zeros for out-of-vocabulary ids). */
import { embed } from "../../embedding.ts"
import { embedRef } from "../../embedding.ref.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export interface EmbeddingParams {
  readonly V: number
  readonly D: number
  readonly T: number
  /** Splits the table into row ranges bound at offsets (as a table past the binding limit is). */
  readonly maxBindingBytes?: number
  readonly note?: string
}

export function embeddingCase(c: EmbeddingParams): KernelCase {
  const host = once(() => ({
    table: rand(c.V * c.D, c.V + c.D),
    // Ids cover the first/last rows, every chunk, and two out-of-vocabulary ids.
    ids: Uint32Array.from({ length: c.T }, (_, t) => (t === 0 ? c.V - 1 : t === 1 ? c.V : t === 2 ? 0xffffffff : (t * 7919) % c.V)),
  }))
  return {
    name: `V ${c.V} D ${c.D} T ${c.T}${c.maxBindingBytes === undefined ? "" : `, chunks ≤ ${c.maxBindingBytes} B`}${c.note === undefined ? "" : ` (${c.note})`}`,
    dtype: "f32",
    setup(rt) {
      const { table, ids } = host()
      const tt = rt.upload(table, [c.V, c.D]), ti = rt.upload(ids)
      // Pre-fill the pooled output buffer with garbage so the zero rows are really written.
      rt.release(rt.upload(new Float32Array(c.T * c.D).fill(9), [c.T, c.D]))
      const opts = c.maxBindingBytes === undefined ? {} : { maxBindingBytes: c.maxBindingBytes }
      return launcher(rt, [tt, ti], () => ({ rows: expectShapeOf("embed", "output", embed(rt, tt, ti, opts), [c.T, c.D]) }))
    },
    expected: once(() => {
      const { table, ids } = host()
      return { rows: { want: embedRef(table, c.V, c.D, ids), tol: {}, shape: [c.T, c.D] } }
    }),
  }
}

export const embeddingOp: KernelOp = {
  op: "embedding",
  variants: () => SINGLE,
  cases: () => [
    embeddingCase({ V: 50, D: 64, T: 13 }),
    embeddingCase({ V: 37, D: 36, T: 70 }),
    embeddingCase({ V: 11, D: 7, T: 9, note: "scalar path" }),
    embeddingCase({ V: 100, D: 12, T: 30, maxBindingBytes: 1024, note: "48-byte rows, 256-byte alignment: 7 chunks of 16 rows" }),
    embeddingCase({ V: 100, D: 5, T: 30, maxBindingBytes: 1280, note: "20-byte rows: 2 chunks of 64 rows, scalar path" }),
  ],
}
