/** Float64 analytic backward of swigluRef. */
export function swigluBackwardRef(
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
  dOut: ArrayLike<number>,
): { dgate: Float64Array; dup: Float64Array } {
  const dgate = new Float64Array(gate.length)
  const dup = new Float64Array(gate.length)
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!
    const s = 1 / (1 + Math.exp(-g))
    dup[i] = dOut[i]! * g * s
    dgate[i] = dOut[i]! * up[i]! * s * (1 + g * (1 - s))
  }
  return { dgate, dup }
}
