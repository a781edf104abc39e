/** Float64 references: weighted cross-entropy loss over rows of logits [Tc, V] and its gradient. */
import { logsumexpRowsRef } from "./logprobs.ref.ts"

/** −Σ_t w_t·(logits[t, target_t] − logsumexp(logits[t])); targets ≥ V contribute nothing. */
export function crossEntropyRef(logits: ArrayLike<number>, V: number, targets: ArrayLike<number>, w: ArrayLike<number>): number {
  const lse = logsumexpRowsRef(logits, V)
  let loss = 0
  for (let t = 0; t < lse.length; t++) {
    const tg = targets[t]!
    if (tg < V && w[t]! !== 0) loss -= w[t]! * (logits[t * V + tg]! - lse[t]!)
  }
  return loss
}

export function crossEntropyBackwardRef(logits: ArrayLike<number>, V: number, targets: ArrayLike<number>, w: ArrayLike<number>): Float64Array {
  const lse = logsumexpRowsRef(logits, V)
  const out = new Float64Array(logits.length)
  for (let t = 0; t < lse.length; t++) {
    const wt = w[t]!
    if (wt === 0) continue
    for (let v = 0; v < V; v++) out[t * V + v] = (Math.exp(logits[t * V + v]! - lse[t]!) - (v === targets[t] ? 1 : 0)) * wt
  }
  return out
}
