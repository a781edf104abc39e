/**
 * The RoPE-table contract: RoPE methods (plugins/rope) produce it, the rope kernel consumes it.
 *
 * One table serves one input length. Pairs follow HF's rotate_half convention: dim i pairs with dim
 * i + rotaryDim/2, for i < rotaryDim/2. Inverse frequencies are float64 here; the kernel turns them into
 * exact fixed-point turns so angles stay accurate (≤ 1e-5 rad) at any position up to 4M and beyond.
 */
export interface RopeTable {
  /** Rotated dims per head (≤ head_dim, even); the rest of each head passes through unchanged. */
  readonly rotaryDim: number
  /**
   * θ'_i, i < rotaryDim/2: the effective inverse frequency for positions ≥ startTokens. Equal to
   * θ_i / λ_i for per-dimension divisors λ_i. One array for all layers, or one array per layer.
   */
  readonly invFreq: Float64Array | readonly Float64Array[]
  /** The base model's θ_i, used for positions below `startTokens` (LongRoPE's n̂; 0 = none). */
  readonly originalInvFreq: Float64Array
  /** Positions below this keep the original rotation and no attention scale (n̂). */
  readonly startTokens: number
  /** m: multiplies cos and sin, so q·k logits scale by m². */
  readonly attentionScale: number
}

/** θ_i = base^(−2i/d_r), the default inverse frequencies (computed in float64). */
export function defaultInvFreq(base: number, rotaryDim: number): Float64Array {
  const half = rotaryDim / 2
  const out = new Float64Array(half)
  for (let i = 0; i < half; i++) out[i] = 1 / Math.pow(base, (2 * i) / rotaryDim)
  return out
}

/** The inverse frequencies a table uses at `layer`. */
export const invFreqAt = (t: RopeTable, layer: number): Float64Array =>
  t.invFreq instanceof Float64Array ? t.invFreq : (t.invFreq[layer] ?? t.invFreq[0]!)
