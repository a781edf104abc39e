/** Float64 references for the in-place helpers in scale.ts. */
export const scaleRef = (x: ArrayLike<number>, s: number): Float64Array => Float64Array.from(x, (v) => v * s)

export function axpyRef(x: ArrayLike<number>, y: ArrayLike<number>, s: number): Float64Array {
  const out = new Float64Array(x.length)
  for (let i = 0; i < x.length; i++) out[i] = x[i]! + s * y[i]!
  return out
}
