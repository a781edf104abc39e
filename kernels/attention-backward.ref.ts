/**
 * Float64 references for training attention: the forward with per-row logsumexp, and the analytic
 * backward, both computed the ordinary way (every score of a row, then softmax), independent of the
 * kernels' flash formulation.
 */
export interface TrainAttentionRefOptions {
  readonly T: number
  readonly heads: number
  readonly kvHeads: number
  readonly headDim: number
  /** Defaults to 1/sqrt(headDim). */
  readonly scale?: number
  /** Document id per token: queries see only keys of their own document. */
  readonly segments?: ArrayLike<number>
}

type Values = ArrayLike<number>

/** p[h][i][j] for j ≤ i (0 elsewhere), and lse[i·heads + h] in natural log. */
function probabilities(q: Values, k: Values, o: TrainAttentionRefOptions): { p: Float64Array; lse: Float64Array } {
  const { T, heads, kvHeads, headDim: d } = o
  const scale = o.scale ?? 1 / Math.sqrt(d)
  const group = heads / kvHeads
  const p = new Float64Array(heads * T * T)
  const lse = new Float64Array(T * heads)
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / group)
    for (let i = 0; i < T; i++) {
      const row = (h * T + i) * T
      let max = -Infinity
      const seen = (j: number): boolean => j <= i && (o.segments === undefined || o.segments[j] === o.segments[i])
      for (let j = 0; j < T; j++) {
        if (!seen(j)) continue
        let s = 0
        for (let c = 0; c < d; c++) s += q[i * heads * d + h * d + c]! * k[j * kvHeads * d + kh * d + c]!
        p[row + j] = s * scale
        max = Math.max(max, s * scale)
      }
      let sum = 0
      for (let j = 0; j < T; j++) if (seen(j)) sum += Math.exp(p[row + j]! - max)
      const l = max + Math.log(sum)
      lse[i * heads + h] = l
      for (let j = 0; j < T; j++) p[row + j] = seen(j) ? Math.exp(p[row + j]! - l) : 0
    }
  }
  return { p, lse }
}

/** q [T, heads·d], k/v [T, kvHeads·d] → o [T, heads·d], lse [T, heads]. */
export function attentionTrainRef(q: Values, k: Values, v: Values, o: TrainAttentionRefOptions): { o: Float64Array; lse: Float64Array } {
  const { T, heads, kvHeads, headDim: d } = o
  if (heads % kvHeads !== 0) throw new Error(`attentionTrainRef: heads ${heads} is not a multiple of kvHeads ${kvHeads}`)
  const group = heads / kvHeads
  const { p, lse } = probabilities(q, k, o)
  const out = new Float64Array(T * heads * d)
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / group)
    for (let i = 0; i < T; i++) {
      for (let j = 0; j <= i; j++) {
        const pij = p[(h * T + i) * T + j]!
        if (pij === 0) continue
        for (let c = 0; c < d; c++) out[i * heads * d + h * d + c]! += pij * v[j * kvHeads * d + kh * d + c]!
      }
    }
  }
  return { o: out, lse }
}

/** Analytic gradients of Σ dO·attentionTrainRef(q, k, v).o. */
export function attentionBackwardRef(
  q: Values,
  k: Values,
  v: Values,
  dO: Values,
  o: TrainAttentionRefOptions,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { T, heads, kvHeads, headDim: d } = o
  const scale = o.scale ?? 1 / Math.sqrt(d)
  const group = heads / kvHeads
  const { p } = probabilities(q, k, o)
  const dq = new Float64Array(T * heads * d)
  const dk = new Float64Array(T * kvHeads * d)
  const dv = new Float64Array(T * kvHeads * d)
  const dp = new Float64Array(T)
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / group)
    for (let i = 0; i < T; i++) {
      const qi = i * heads * d + h * d
      // dp_ij = dO_i·v_j; ds_ij = p_ij (dp_ij − Σ_j' p_ij' dp_ij')
      let rowSum = 0
      for (let j = 0; j <= i; j++) {
        let s = 0
        for (let c = 0; c < d; c++) s += dO[qi + c]! * v[j * kvHeads * d + kh * d + c]!
        dp[j] = s
        rowSum += p[(h * T + i) * T + j]! * s
      }
      for (let j = 0; j <= i; j++) {
        const pij = p[(h * T + i) * T + j]!
        if (pij === 0) continue
        const ds = pij * (dp[j]! - rowSum) * scale
        const kj = j * kvHeads * d + kh * d
        for (let c = 0; c < d; c++) {
          dq[qi + c]! += ds * k[kj + c]!
          dk[kj + c]! += ds * q[qi + c]!
          dv[kj + c]! += pij * dO[qi + c]!
        }
      }
    }
  }
  return { dq, dk, dv }
}
