/** Float64 reference for embed: rows of table [V, D] by id; ids ≥ V give zeros. */
export function embedRef(table: ArrayLike<number>, V: number, D: number, ids: ArrayLike<number>): Float64Array {
  const out = new Float64Array(ids.length * D)
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t]!
    if (id < V) for (let d = 0; d < D; d++) out[t * D + d] = table[id * D + d]!
  }
  return out
}
