/** Float64 reference for layernorm over rows of length D (biased variance, as torch). */
export function layernormRef(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>, D: number, eps: number): Float64Array {
  const out = new Float64Array(x.length)
  for (let base = 0; base < x.length; base += D) {
    let mean = 0
    for (let d = 0; d < D; d++) mean += x[base + d]!
    mean /= D
    let v = 0
    for (let d = 0; d < D; d++) v += (x[base + d]! - mean) ** 2
    const inv = 1 / Math.sqrt(v / D + eps)
    for (let d = 0; d < D; d++) out[base + d] = (x[base + d]! - mean) * inv * w[d]! + b[d]!
  }
  return out
}
