/**
 * Pure, float64 helpers for per-dimension RoPE divisors λ_i = θ_i / θ'_i (i < rotaryDim/2).
 * Methods build their tables from these; the search seeds its population from them (PI, NTK, YaRN).
 * λ = 1 keeps a dimension as pretrained (extrapolation); λ = s interpolates it linearly by s.
 */
import { defaultInvFreq } from "../../kernels/rope-table.ts"

/** What every factor helper needs to know about the model. */
export interface RopeGeometry {
  /** d_r: rotated dims per head (even). */
  readonly rotaryDim: number
  /** rope_theta. */
  readonly base: number
  /** L0: the pretrained context length (original_max_position_embeddings). */
  readonly originalLength: number
}

/** Attention-temperature policy: LongRoPE's "su", YaRN's, or a fixed m. */
export type MscalePolicy = "su" | "yarn" | number

/**
 * m for scale s = L'/L0: "su" = sqrt(1 + ln s / ln L0), "yarn" = 0.1 ln s + 1, a number = itself.
 * The formulas give 1 whenever s ≤ 1 (no extension, no temperature change).
 */
export function mscale(policy: MscalePolicy, s: number, originalLength: number): number {
  if (typeof policy === "number") return policy
  if (s <= 1) return 1
  return policy === "su" ? Math.sqrt(1 + Math.log(s) / Math.log(originalLength)) : 0.1 * Math.log(s) + 1
}

/** HF's get_mscale(scale, mscale): 0.1·mscale·ln(scale) + 1, or 1 when scale ≤ 1 (YaRN / DeepSeek). */
export const yarnGetMscale = (scale: number, m = 1): number => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1)

/** θ'_i = θ_i / λ_i. */
export function invFreqFromFactors(base: number, rotaryDim: number, factors: Float64Array): Float64Array {
  const theta = defaultInvFreq(base, rotaryDim)
  return theta.map((t, i) => t / factors[i]!)
}

/** λ_i = θ_i / θ'_i, the divisors a table applies (for reports and for seeding). */
export function factorsFromInvFreq(original: Float64Array, invFreq: Float64Array): Float64Array {
  return original.map((t, i) => t / invFreq[i]!)
}

// ---- PI and NTK ------------------------------------------------------------------------------

/** Linear position interpolation: every λ_i = s. */
export const piFactors = (g: Pick<RopeGeometry, "rotaryDim">, s: number): Float64Array =>
  new Float64Array(g.rotaryDim / 2).fill(s)

/** The NTK-aware base: base' = base · s^(d/(d−2)). */
export const ntkBase = (base: number, rotaryDim: number, s: number): number => base * Math.pow(s, rotaryDim / (rotaryDim - 2))

/** Static NTK-aware scaling as divisors: with base' = base·s^(d/(d−2)), λ_i = s^(2i/(d−2)) (λ_0 = 1). */
export function ntkFactors(g: Pick<RopeGeometry, "rotaryDim">, s: number): Float64Array {
  const d = g.rotaryDim
  const out = new Float64Array(d / 2)
  for (let i = 0; i < d / 2; i++) out[i] = Math.pow(s, (2 * i) / (d - 2))
  return out
}

/**
 * HF dynamic NTK: for seqLen = max(length, maxPositions),
 * base' = base · ((factor·seqLen/maxPositions) − (factor − 1))^(d/(d−2)); equal to base at seqLen = maxPositions.
 */
export function dynamicNtkBase(base: number, rotaryDim: number, factor: number, length: number, maxPositions: number): number {
  const seqLen = Math.max(length, maxPositions)
  return base * Math.pow((factor * seqLen) / maxPositions - (factor - 1), rotaryDim / (rotaryDim - 2))
}

// ---- YaRN --------------------------------------------------------------------------------------

export interface YarnOptions {
  /** Rotations at which a dim starts to be interpolated at all (default 32, HF's `beta_fast`). */
  readonly betaFast?: number
  /** Rotations below which a dim is fully interpolated (default 1, HF's `beta_slow`). */
  readonly betaSlow?: number
  /** Floor/ceil the correction range to whole dims (HF `truncate`, default true). */
  readonly truncate?: boolean
}

/** The (fractional) dim index whose wavelength makes `rotations` turns over L0: HF find_correction_dim. */
export const yarnCorrectionDim = (rotations: number, g: RopeGeometry): number =>
  (g.rotaryDim * Math.log(g.originalLength / (rotations * 2 * Math.PI))) / (2 * Math.log(g.base))

/**
 * HF find_correction_range: low = floor(dim(β_fast)), high = ceil(dim(β_slow)) (no rounding when
 * truncate is false), clamped to [0, d−1]. Note the upper clamp is d−1, not d/2−1, as in HF.
 */
export function yarnRamp(g: RopeGeometry, opts: YarnOptions = {}): { low: number; high: number } {
  const truncate = opts.truncate ?? true
  let low = yarnCorrectionDim(opts.betaFast ?? 32, g)
  let high = yarnCorrectionDim(opts.betaSlow ?? 1, g)
  if (truncate) {
    low = Math.floor(low)
    high = Math.ceil(high)
  }
  return { low: Math.max(low, 0), high: Math.min(high, g.rotaryDim - 1) }
}

/** HF linear_ramp_factor: clamp((i − low)/(high − low), 0, 1) for i < n; high += 0.001 when equal. */
export function yarnRampMask(low: number, high: number, n: number): Float64Array {
  const hi = low === high ? high + 0.001 : high
  const out = new Float64Array(n)
  for (let i = 0; i < n; i++) out[i] = Math.min(1, Math.max(0, (i - low) / (hi - low)))
  return out
}

/**
 * HF YaRN ("NTK-by-parts") divisors at scale s. HF blends inverse frequencies,
 * θ' = θ/s · r + θ · (1 − r) with r the ramp mask, so λ_i = 1 / (r_i/s + 1 − r_i).
 */
export function yarnFactors(g: RopeGeometry, s: number, opts: YarnOptions = {}): Float64Array {
  const { low, high } = yarnRamp(g, opts)
  const r = yarnRampMask(low, high, g.rotaryDim / 2)
  return r.map((ri) => 1 / (ri / s + (1 - ri)))
}

/**
 * LongRoPE's search initialisation ("YaRN init", evolution/search.py): the same ramp, but linear in λ:
 * λ_i = 1 + (s − 1)·r_i. For LLaMA2 at 64x this is 21 ones, then 3.42 … 64.
 */
export function yarnInitFactors(g: RopeGeometry, s: number, opts: YarnOptions = {}): Float64Array {
  const { low, high } = yarnRamp(g, opts)
  return yarnRampMask(low, high, g.rotaryDim / 2).map((ri) => 1 + (s - 1) * ri)
}

// ---- Llama 3 -----------------------------------------------------------------------------------

export interface Llama3Options {
  readonly factor: number
  readonly lowFreqFactor: number
  readonly highFreqFactor: number
}

/**
 * Llama 3.1 divisors (HF _compute_llama3_parameters): wavelengths shorter than L0/high_freq_factor keep
 * λ = 1, longer than L0/low_freq_factor get λ = factor, and in between θ' = (1−t)·θ/factor + t·θ with
 * t = (L0/wavelen − low)/(high − low).
 */
export function llama3Factors(g: RopeGeometry, o: Llama3Options): Float64Array {
  const theta = defaultInvFreq(g.base, g.rotaryDim)
  const lowWavelen = g.originalLength / o.lowFreqFactor
  const highWavelen = g.originalLength / o.highFreqFactor
  return theta.map((t) => {
    const wavelen = (2 * Math.PI) / t
    if (wavelen < highWavelen) return 1
    if (wavelen > lowWavelen) return o.factor
    const smooth = (g.originalLength / wavelen - o.lowFreqFactor) / (o.highFreqFactor - o.lowFreqFactor)
    return 1 / ((1 - smooth) / o.factor + smooth)
  })
}

// ---- LongRoPE ----------------------------------------------------------------------------------

/**
 * LongRoPE2's critical dimension, an index into the d/2 divisors: ceil((d/2)·log_b(L0/2π)) − 1.
 * LLaMA3-8B (d128, b5e5, 8192) → 34; Phi-3-mini (d96, b1e4, 4096) → 33; LLaMA2 (d128, b1e4, 4096) → 45.
 */
export const criticalDim = (g: RopeGeometry): number =>
  Math.ceil((g.rotaryDim / 2) * (Math.log(g.originalLength / (2 * Math.PI)) / Math.log(g.base))) - 1

/** LongRoPE2: dims below cd follow an NTK-style geometric ramp from 1 to λ_cd, λ_i = λ_cd^(i/cd). */
export function criticalDimRamp(factors: Float64Array, cd: number): Float64Array {
  const out = Float64Array.from(factors)
  const top = factors[cd]
  if (top === undefined || cd <= 0) return out
  for (let i = 0; i < cd; i++) out[i] = Math.pow(top, i / cd)
  return out
}

/**
 * Re-targets factors searched at scale s to scale s2 (LongRoPE `rescale()`): λ' = 1 + (λ − 1)(s2 − 1)/(s − 1).
 * Identity at s2 = 1, the input at s2 = s.
 */
export function rescaleFactors(factors: Float64Array, s: number, s2: number): Float64Array {
  if (s === 1) return Float64Array.from(factors)
  return factors.map((l) => 1 + ((l - 1) * (s2 - 1)) / (s - 1))
}

/**
 * Dynamic LongRoPE (§1.5): at current length L, λ_i(L) = 1 + (λ_i − 1)(L/L0 − 1)/(s − 1).
 * L is clamped to [L0, s·L0], so short inputs get the identity and long ones the searched factors.
 */
export function dynamicLongropeFactors(factors: Float64Array, s: number, length: number, originalLength: number): Float64Array {
  const ratio = Math.min(Math.max(length / originalLength, 1), Math.max(s, 1))
  return rescaleFactors(factors, s, ratio)
}
