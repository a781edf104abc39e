/** Float64 reference for embeddingBackward: dTable [V, D] += dOut rows by id; ids ≥ V are skipped. */
export function embeddingBackwardRef(dTable: ArrayLike<number>, V: number, D: number, ids: ArrayLike<number>, dOut: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(dTable)
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t]!
    if (id < V) for (let d = 0; d < D; d++) out[id * D + d]! += dOut[t * D + d]!
  }
  return out
}
