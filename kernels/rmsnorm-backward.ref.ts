/** Float64 analytic backward of rmsnormRef over rows of length D. */
export function rmsnormBackwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  dy: ArrayLike<number>,
  D: number,
  eps: number,
): { dx: Float64Array; dw: Float64Array } {
  const dx = new Float64Array(x.length)
  const dw = new Float64Array(D)
  for (let base = 0; base < x.length; base += D) {
    let ss = 0, sd = 0
    for (let d = 0; d < D; d++) {
      ss += x[base + d]! ** 2
      sd += w[d]! * dy[base + d]! * x[base + d]!
    }
    const r = 1 / Math.sqrt(ss / D + eps)
    const k = (r * r * r * sd) / D
    for (let d = 0; d < D; d++) {
      dx[base + d] = r * w[d]! * dy[base + d]! - x[base + d]! * k
      dw[d]! += dy[base + d]! * x[base + d]! * r
    }
  }
  return { dx, dw }
}
