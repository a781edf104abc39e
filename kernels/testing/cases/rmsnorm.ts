/** Table cases of RMSNorm (forward). */
import { rmsnorm } from "../../rmsnorm.ts"
import { rmsnormRef } from "../../rmsnorm.ref.ts"
import { type KernelCase, type KernelOp, SINGLE, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export interface RmsnormParams {
  /** Rows: leading dims of x (e.g. [T] or [2, 3]). */
  readonly rows: readonly number[]
  readonly D: number
  readonly eps: number
  /** |x| ≤ scale. */
  readonly scale: number
  /** Row indices set to zero (must give 0, not NaN). */
  readonly zeroRows?: readonly number[]
  readonly seed?: number
  readonly note?: string
}

export function rmsnormCase(c: RmsnormParams): KernelCase {
  const T = c.rows.reduce((a, b) => a * b, 1)
  const shape = [...c.rows, c.D]
  const host = once(() => {
    const x = rand(T * c.D, c.seed ?? c.D, c.scale)
    for (const r of c.zeroRows ?? []) x.fill(0, r * c.D, (r + 1) * c.D)
    return { x, w: rand(c.D, (c.seed ?? 6) + 1, 0.5, 1) }
  })
  return {
    name: `${c.rows.join("×")} rows, D ${c.D}, eps ${c.eps}, |x| ≤ ${c.scale}${c.note === undefined ? "" : ` (${c.note})`}`,
    dtype: "f32",
    setup(rt) {
      const { x, w } = host()
      const tx = rt.upload(x, shape), tw = rt.upload(w)
      return launcher(rt, [tx, tw], () => ({ y: expectShapeOf("rmsnorm", "output", rmsnorm(rt, tx, tw, c.eps), shape) }))
    },
    expected: once(() => {
      const { x, w } = host()
      // Outputs are O(1): f32 sum of squares and rsqrt give a few ulps relative.
      return { y: { want: rmsnormRef(x, w, c.D, c.eps), tol: { rel: 2e-6, floor: 1 }, shape: [T, c.D] } }
    }),
  }
}

export const rmsnormOp: KernelOp = {
  op: "rmsnorm",
  variants: () => SINGLE,
  cases: () => [
    rmsnormCase({ rows: [5], D: 64, eps: 1e-5, scale: 1 }),
    rmsnormCase({ rows: [3], D: 4096, eps: 1e-6, scale: 3 }),
    rmsnormCase({ rows: [7], D: 100, eps: 1e-5, scale: 1 }),
    rmsnormCase({ rows: [9], D: 37, eps: 1e-5, scale: 50, note: "scalar path, D below the workgroup size" }),
    rmsnormCase({ rows: [2], D: 3, eps: 1e-6, scale: 1 }),
    rmsnormCase({ rows: [4], D: 260, eps: 1e-2, scale: 0.01, note: "eps dominates the mean square" }),
    rmsnormCase({ rows: [2, 3], D: 8, eps: 1e-6, scale: 1, zeroRows: [1], seed: 5, note: "3-d input, a zero row gives 0, not NaN" }),
    rmsnormCase({ rows: [65535 + 77], D: 4, eps: 1e-5, scale: 2, seed: 9, note: "more rows than workgroups per dispatch: grid-stride over rows" }),
  ],
}
