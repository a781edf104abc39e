/** Helpers shared by the kernel tests: seeded random inputs, error measures, central-difference gradients. */

/** n values uniform in [offset − scale, offset + scale), from a seeded LCG (same seed, same values). */
export const rand = (n: number, seed: number, scale = 1, offset = 0): Float32Array => {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale + offset
  }
  return out
}

/** max |a − b| / max |b|: error relative to the tensor's scale. */
export const relErr = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let e = 0, m = 1e-30
  for (let i = 0; i < b.length; i++) {
    e = Math.max(e, Math.abs(a[i]! - b[i]!))
    m = Math.max(m, Math.abs(b[i]!))
  }
  return e / m
}

/** Central differences of loss(v) = Σ g·f(v) with respect to every entry of v (float64). */
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
