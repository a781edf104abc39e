/** Float64 references for logsumexpRows and logprobsFromLogits over rows of length V. */
export function logsumexpRowsRef(logits: ArrayLike<number>, V: number): Float64Array {
  const rows = logits.length / V
  const out = new Float64Array(rows)
  for (let t = 0; t < rows; t++) {
    let m = -Infinity
    for (let v = 0; v < V; v++) m = Math.max(m, logits[t * V + v]!)
    let s = 0
    for (let v = 0; v < V; v++) s += Math.exp(logits[t * V + v]! - m)
    out[t] = m + Math.log(s)
  }
  return out
}

export function logprobsRef(logits: ArrayLike<number>, V: number, targets: ArrayLike<number>): Float64Array {
  const lse = logsumexpRowsRef(logits, V)
  return lse.map((l, t) => logits[t * V + targets[t]!]! - l)
}
