/** Float64 reference for gelu: 0.5·x·(1 + erf(x/√2)) with erf to ~1e-14. */

/**
 * erf in float64: its Maclaurin series below 3 (terms alternate; ≤ 1e-12 lost to cancellation), the
 * continued fraction of erfc above (converges fast there), ±1 past 6 (erfc(6) < 3e-17).
 */
export function erfRef(x: number): number {
  const z = Math.abs(x)
  if (z >= 6) return Math.sign(x)
  if (z < 3) {
    let term = z
    let sum = z
    for (let n = 1; n < 200 && Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
      term *= (-z * z) / n
      sum += term / (2 * n + 1)
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum
  }
  // erfc(z) = exp(−z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + ...))))), evaluated bottom-up
  let f = z
  for (let k = 60; k >= 1; k--) f = z + k / 2 / f
  return Math.sign(x) * (1 - Math.exp(-z * z) / Math.sqrt(Math.PI) / f)
}

export const geluRef1 = (x: number): number => 0.5 * x * (1 + erfRef(x / Math.SQRT2))

export function geluRef(x: ArrayLike<number>): Float64Array {
  const out = new Float64Array(x.length)
  for (let i = 0; i < x.length; i++) out[i] = geluRef1(x[i]!)
  return out
}
