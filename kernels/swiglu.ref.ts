/** Float64 reference for swiglu. */
export const siluRef = (x: number): number => x / (1 + Math.exp(-x))

export function swigluRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const out = new Float64Array(gate.length)
  for (let i = 0; i < gate.length; i++) out[i] = siluRef(gate[i]!) * up[i]!
  return out
}
