/**
 * Float64 reference for causal attention: the ordinary way (all scores of a row, max, softmax, ·V),
 * so it checks the kernels' online softmax against an independent formulation.
 */
export interface AttentionRefOptions {
  /** Query rows. */
  readonly tq: number
  /** Key/value rows available (≥ queryOffset + tq). */
  readonly tk: number
  readonly heads: number
  readonly kvHeads: number
  readonly headDim: number
  /** Absolute position of query row 0: query i sees keys 0..queryOffset+i. */
  readonly queryOffset: number
  /** Defaults to 1/sqrt(headDim). */
  readonly scale?: number
}

type Values = Float32Array | Float64Array

/** q [tq, heads·headDim], k/v [tk, kvHeads·headDim] row-major; returns [tq, heads·headDim]. */
export function attentionRef(q: Values, k: Values, v: Values, o: AttentionRefOptions): Float64Array {
  const { tq, tk, heads, kvHeads, headDim: d, queryOffset } = o
  const scale = o.scale ?? 1 / Math.sqrt(d)
  if (heads % kvHeads !== 0) throw new Error(`attentionRef: heads ${heads} is not a multiple of kvHeads ${kvHeads}`)
  if (queryOffset + tq > tk) throw new Error(`attentionRef: queries reach position ${queryOffset + tq - 1} but only ${tk} keys`)
  const group = heads / kvHeads
  const qs = heads * d
  const ks = kvHeads * d
  const out = new Float64Array(tq * qs)
  const scores = new Float64Array(tk)
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / group)
    for (let i = 0; i < tq; i++) {
      const n = queryOffset + i + 1
      let max = -Infinity
      for (let j = 0; j < n; j++) {
        let s = 0
        for (let c = 0; c < d; c++) s += q[i * qs + h * d + c]! * k[j * ks + kh * d + c]!
        s *= scale
        scores[j] = s
        if (s > max) max = s
      }
      let sum = 0
      for (let j = 0; j < n; j++) {
        const p = Math.exp(scores[j]! - max)
        scores[j] = p
        sum += p
      }
      for (let j = 0; j < n; j++) {
        const p = scores[j]! / sum
        for (let c = 0; c < d; c++) out[i * qs + h * d + c]! += p * v[j * ks + kh * d + c]!
      }
    }
  }
  return out
}
