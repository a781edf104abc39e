/** Float64 reference for rmsnorm over rows of length D. */
export function rmsnormRef(x: ArrayLike<number>, w: ArrayLike<number>, D: number, eps: number): Float64Array {
  const out = new Float64Array(x.length)
  for (let base = 0; base < x.length; base += D) {
    let ss = 0
    for (let d = 0; d < D; d++) ss += x[base + d]! ** 2
    const inv = 1 / Math.sqrt(ss / D + eps)
    for (let d = 0; d < D; d++) out[base + d] = x[base + d]! * inv * w[d]!
  }
  return out
}
