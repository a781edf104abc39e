/** Central differences, for checking the training ops' float64 backward references against their forwards. */

/** Central differences of `loss` with respect to every entry of v (float64; v is restored). */
export function fdGrad(v: Float64Array, loss: () => number, h = 1e-5): Float64Array {
  const g = new Float64Array(v.length)
  for (let i = 0; i < v.length; i++) {
    const old = v[i]!
    v[i] = old + h
    const up = loss()
    v[i] = old - h
    const down = loss()
    v[i] = old
    g[i] = (up - down) / (2 * h)
  }
  return g
}

/** Σ g·y: a scalar loss whose gradient with respect to y is g. */
export const dotLoss = (g: ArrayLike<number>, y: ArrayLike<number>): number => {
  let s = 0
  for (let i = 0; i < y.length; i++) s += g[i]! * y[i]!
  return s
}
