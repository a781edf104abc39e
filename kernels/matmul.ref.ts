/** Float64 reference for the matmul kernels: C[M,N] = op(A)·op(B), row-major, no tricks. */
export interface MatmulRefOptions {
  /** A is stored [K, M] instead of [M, K]. */
  readonly transA?: boolean
  /** B is stored [N, K] instead of [K, N] (a linear layer's weight in HF layout). */
  readonly transB?: boolean
}

export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  opts: MatmulRefOptions = {},
): Float64Array {
  if (a.length < m * k || b.length < k * n) throw new Error(`matmulRef: operands too short for ${m}×${n}×${k}`)
  const out = new Float64Array(m * n)
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0
      for (let l = 0; l < k; l++) {
        const av = opts.transA === true ? a[l * m + i]! : a[i * k + l]!
        const bv = opts.transB === true ? b[j * k + l]! : b[l * n + j]!
        s += av * bv
      }
      out[i * n + j] = s
    }
  }
  return out
}
