/**
 * Score agreement for every RoPE method: `model.logprobs` (the GPU path, with the table plugins/rope makes
 * for the input length) against the float64 reference model fed inverse frequencies and attention factors
 * computed here, afresh, from transformers' formulas (modeling_rope_utils.py: _compute_*_parameters and
 * the dynamic/longrope length rule seq_len = max(position_ids)+1). Nothing here calls plugins/rope.
 *
 * Lengths: below, at and above the original context, and for longrope the exact switch L0 / L0+1.
 * One head_dim (32) throughout, so the attention kernel compiles once.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { gpu } from "../gpu-shared.ts"
import { type RandomModelOptions, removeDir, rng, tempDir, writeRandomModel } from "./random-model.ts"
import { type ExplicitRope, randomTokens, referenceLogprobs } from "../../plugins/models/llama/model.ref.ts"

const TOL = 1e-4
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})

const HD = 32

// ---- transformers' formulas, float64 -------------------------------------------------------------

/** _compute_default_rope_parameters: inv_freq_i = 1 / base^(2i/dim). */
const defaultInv = (base: number, dim: number): Float64Array => Float64Array.from({ length: dim / 2 }, (_, i) => 1 / base ** ((2 * i) / dim))

/** _compute_linear_scaling_rope_parameters: inv_freq / factor. */
const linearRope = (base: number, dim: number, factor: number): ExplicitRope => ({ invFreq: defaultInv(base, dim).map((f) => f / factor) })

/** Static NTK (vLLM's NTKScalingRotaryEmbedding; transformers' _compute_ntk_parameters): base · factor^(dim/(dim−2)). */
const ntkRope = (base: number, dim: number, factor: number): ExplicitRope => ({ invFreq: defaultInv(base * factor ** (dim / (dim - 2)), dim) })

/** _compute_dynamic_ntk_parameters at seq_len = max(length, max_position_embeddings). */
function dynamicRope(base: number, dim: number, factor: number, maxPos: number, length: number): ExplicitRope {
  const seqLen = Math.max(length, maxPos)
  return { invFreq: defaultInv(base * ((factor * seqLen) / maxPos - (factor - 1)) ** (dim / (dim - 2)), dim) }
}

interface YarnParams {
  readonly factor?: number
  readonly attention_factor?: number
  readonly mscale?: number
  readonly mscale_all_dim?: number
  readonly beta_fast?: number
  readonly beta_slow?: number
  readonly truncate?: boolean
  readonly original_max_position_embeddings?: number
}

/** _compute_yarn_parameters (transformers 5.x). */
function yarnRope(base: number, dim: number, maxPos: number, p: YarnParams): ExplicitRope {
  const original = p.original_max_position_embeddings ?? maxPos
  const factor = p.factor ?? maxPos / original
  const getMscale = (scale: number, m = 1): number => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1)
  let attention = p.attention_factor
  if (attention === undefined) {
    attention = p.mscale && p.mscale_all_dim ? getMscale(factor, p.mscale) / getMscale(factor, p.mscale_all_dim) : getMscale(factor)
  }
  const betaFast = p.beta_fast || 32
  const betaSlow = p.beta_slow || 1
  const correctionDim = (rot: number): number => (dim * Math.log(original / (rot * 2 * Math.PI))) / (2 * Math.log(base))
  let low = correctionDim(betaFast)
  let high = correctionDim(betaSlow)
  if (p.truncate ?? true) {
    low = Math.floor(low)
    high = Math.ceil(high)
  }
  low = Math.max(low, 0)
  high = Math.min(high, dim - 1)
  if (low === high) high += 0.001
  const inv = new Float64Array(dim / 2)
  for (let i = 0; i < dim / 2; i++) {
    const posFreq = base ** ((2 * i) / dim)
    const extrapolation = 1 / posFreq
    const interpolation = 1 / (factor * posFreq)
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)))
    const extrapolationFactor = 1 - ramp
    inv[i] = interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor
  }
  return { invFreq: inv, attentionFactor: attention }
}

/** _compute_llama3_parameters. */
function llama3Rope(base: number, dim: number, factor: number, low: number, high: number, oldContext: number): ExplicitRope {
  const lowWavelen = oldContext / low
  const highWavelen = oldContext / high
  const inv = defaultInv(base, dim).map((f) => {
    const wavelen = (2 * Math.PI) / f
    const scaled = wavelen > lowWavelen ? f / factor : f
    const smooth = (oldContext / wavelen - low) / (high - low)
    const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen)
    return medium ? ((1 - smooth) * scaled) / factor + smooth * scaled : scaled
  })
  return { invFreq: inv }
}

/** _compute_longrope_parameters at seq_len = length: long_factor when length > original. */
function longropeRope(
  base: number,
  dim: number,
  maxPos: number,
  p: { short: readonly number[]; long: readonly number[]; original: number; factor?: number; attention_factor?: number },
  length: number,
): ExplicitRope {
  const factor = p.factor ?? maxPos / p.original
  const attention = p.attention_factor ?? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(p.original)))
  const ext = length > p.original ? p.long : p.short
  return { invFreq: Float64Array.from({ length: dim / 2 }, (_, i) => 1 / (ext[i]! * base ** ((2 * i) / dim))), attentionFactor: attention }
}

/**
 * LongRoPE research extensions (ropeway's `longrope-research`, after the LongRoPE code): the first set
 * whose max_length ≥ length (else the last); m by policy at s = max_length/L0 ("su": sqrt(1 + ln s/ln L0),
 * "yarn": 0.1 ln s + 1, 1 when s ≤ 1); LongRoPE2's critical-dim ramp λ_i = λ_cd^(i/cd) below cd; with
 * `dynamic`, λ(L) = 1 + (λ − 1)(r − 1)/(s − 1) and m at r, r = L/L0 clamped to [1, s]; n̂ per set.
 */
function researchRope(
  base: number,
  dim: number,
  L0: number,
  sets: readonly { maxLength: number; factors: readonly (readonly number[])[]; start: number; policy: "su" | "yarn" }[],
  opts: { criticalDim?: number; dynamic?: boolean },
  length: number,
): ExplicitRope {
  const set = sets.find((x) => length <= x.maxLength) ?? sets[sets.length - 1]!
  const s = set.maxLength / L0
  const r = opts.dynamic === true ? Math.min(Math.max(length / L0, 1), s) : s
  const m = r <= 1 ? 1 : set.policy === "su" ? Math.sqrt(1 + Math.log(r) / Math.log(L0)) : 0.1 * Math.log(r) + 1
  const perLayer = set.factors.map((row) => {
    let f = [...row]
    const cd = opts.criticalDim
    if (cd !== undefined) f = f.map((x, i) => (i < cd ? f[cd]! ** (i / cd) : x))
    if (opts.dynamic === true && s > 1) f = f.map((x) => 1 + ((x - 1) * (r - 1)) / (s - 1))
    return Float64Array.from(f, (x, i) => 1 / (x * base ** ((2 * i) / dim)))
  })
  return { invFreq: perLayer.length === 1 ? perLayer[0]! : perLayer, attentionFactor: m, startTokens: set.start }
}

function factorList(seed: number, n: number, lo: number, hi: number): number[] {
  const r = rng(seed)
  return Array.from({ length: n }, (_, i) => lo + ((hi - lo) * i) / (n - 1) + 0.05 * r())
}

// ---- cases -------------------------------------------------------------------------------------

interface Case {
  readonly name: string
  readonly model: Partial<RandomModelOptions>
  readonly lengths: readonly number[]
  /** The expected RoPE for an input of `length` tokens. */
  readonly rope: (length: number) => ExplicitRope
}

const SHORT16 = factorList(1, 16, 1, 1.5)
const LONG16 = factorList(2, 16, 1, 6)
const SHORT8 = factorList(3, 8, 1, 1.3)
const LONG8 = factorList(4, 8, 1.2, 5)

const R1 = factorList(5, 16, 1, 2)
const R2 = [factorList(6, 16, 1, 4), factorList(7, 16, 1.1, 3.5)]

const cases: Case[] = [
  { name: "default", model: { maxPositions: 48 }, lengths: [20, 48, 90], rope: () => ({ invFreq: defaultInv(10000, HD) }) },
  {
    name: "linear ×2.5",
    model: { maxPositions: 48, ropeScaling: { rope_type: "linear", factor: 2.5 } },
    lengths: [20, 48, 90],
    rope: () => linearRope(10000, HD, 2.5),
  },
  {
    name: "ntk ×3, rope_theta 500000",
    model: { maxPositions: 48, ropeTheta: 500000, ropeScaling: { rope_type: "ntk", factor: 3 } },
    lengths: [20, 48, 90],
    rope: () => ntkRope(500000, HD, 3),
  },
  {
    name: "dynamic ×2 (old key `type`), max_position_embeddings 48",
    model: { maxPositions: 48, ropeScaling: { type: "dynamic", factor: 2 } },
    lengths: [20, 48, 49, 90],
    rope: (n) => dynamicRope(10000, HD, 2, 48, n),
  },
  {
    name: "yarn factor 4, defaults (original = max_position_embeddings 48)",
    model: { maxPositions: 48, ropeScaling: { rope_type: "yarn", factor: 4 } },
    lengths: [20, 48, 90],
    rope: () => yarnRope(10000, HD, 48, { factor: 4 }),
  },
  {
    name: "yarn with original 32, mscale 0.8 / mscale_all_dim 0.5, beta 16/2, rope_theta 500000",
    model: {
      maxPositions: 128,
      ropeTheta: 500000,
      ropeScaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 32, mscale: 0.8, mscale_all_dim: 0.5, beta_fast: 16, beta_slow: 2 },
    },
    lengths: [20, 32, 33, 90],
    rope: () => yarnRope(500000, HD, 128, { factor: 4, original_max_position_embeddings: 32, mscale: 0.8, mscale_all_dim: 0.5, beta_fast: 16, beta_slow: 2 }),
  },
  {
    name: "yarn: factor derived from max/original, explicit attention_factor, truncate false",
    model: { maxPositions: 96, originalMaxPositions: 32, ropeScaling: { rope_type: "yarn", attention_factor: 1.25, truncate: false } },
    lengths: [20, 32, 90],
    rope: () => yarnRope(10000, HD, 96, { original_max_position_embeddings: 32, attention_factor: 1.25, truncate: false }),
  },
  {
    name: "llama3 factor 4, low 1 / high 4, original 32",
    model: { maxPositions: 128, ropeScaling: { rope_type: "llama3", factor: 4, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 } },
    lengths: [20, 32, 90],
    rope: () => llama3Rope(10000, HD, 4, 1, 4, 32),
  },
  {
    name: "longrope (Phi-3 style: factor from max/original 128/32): below, at L0, at L0+1, above",
    model: { maxPositions: 128, originalMaxPositions: 32, ropeScaling: { rope_type: "longrope", short_factor: SHORT16, long_factor: LONG16 } },
    lengths: [20, 32, 33, 90],
    rope: (n) => longropeRope(10000, HD, 128, { short: SHORT16, long: LONG16, original: 32 }, n),
  },
  {
    name: "longrope as `su` with explicit factor and attention_factor",
    model: {
      maxPositions: 128,
      originalMaxPositions: 32,
      ropeScaling: { type: "su", short_factor: SHORT16, long_factor: LONG16, factor: 8, attention_factor: 1.4 },
    },
    lengths: [32, 33],
    rope: (n) => longropeRope(10000, HD, 128, { short: SHORT16, long: LONG16, original: 32, factor: 8, attention_factor: 1.4 }, n),
  },
  {
    name: "longrope on Phi-3, partial rotary 0.5 (8 factors), original in rope_scaling",
    model: {
      arch: "Phi3ForCausalLM",
      partialRotary: 0.5,
      maxPositions: 256,
      ropeScaling: { rope_type: "longrope", short_factor: SHORT8, long_factor: LONG8, original_max_position_embeddings: 40 },
    },
    lengths: [40, 41, 90],
    rope: (n) => longropeRope(10000, HD / 2, 256, { short: SHORT8, long: LONG8, original: 40 }, n),
  },
  {
    name: "longrope-research: 2 buckets, per-layer factors, start tokens 0/3, mscale yarn, critical dim 5",
    model: {
      maxPositions: 128,
      ropeScaling: {
        rope_type: "longrope-research",
        original_max_position_embeddings: 24,
        mscale: "yarn",
        critical_dim: 5,
        sets: [
          { max_length: 48, factors: R1 },
          { max_length: 96, factors: R2, start_tokens: 3 },
        ],
      },
    },
    lengths: [20, 48, 49, 96, 100],
    rope: (n) =>
      researchRope(10000, HD, 24, [{ maxLength: 48, factors: [R1], start: 0, policy: "yarn" }, { maxLength: 96, factors: R2, start: 3, policy: "yarn" }], { criticalDim: 5 }, n),
  },
  {
    name: "longrope-research dynamic: factors and m re-targeted to the length (su)",
    model: {
      maxPositions: 128,
      ropeScaling: { rope_type: "longrope-research", original_max_position_embeddings: 24, dynamic: true, start_tokens: 2, sets: [{ max_length: 96, factors: R2[0] }] },
    },
    lengths: [20, 24, 60, 96],
    rope: (n) => researchRope(10000, HD, 24, [{ maxLength: 96, factors: [R2[0]!], start: 2, policy: "su" }], { dynamic: true }, n),
  },
]

describe("score agrees with float64 transformers formulas for every RoPE method", () => {
  for (const [k, c] of cases.entries()) {
    test(c.name, async () => {
      const dir = tempDir()
      dirs.push(dir)
      const rm = writeRandomModel(dir, { hidden: 64, layers: 2, heads: 2, kvHeads: 1, headDim: HD, intermediate: 96, vocab: 89, seed: 100 + k, ...c.model })
      const model = await loadLlama(await gpu(), dir)
      try {
        const parts: string[] = []
        for (const n of c.lengths) {
          const tokens = randomTokens(n, 89, 7 + n)
          const got = await model.logprobs(tokens)
          const ref = referenceLogprobs(rm, tokens, { rope: c.rope(n) })
          let maxAbs = 0
          for (let i = 0; i < ref.length; i++) maxAbs = Math.max(maxAbs, Math.abs(got[i]! - ref[i]!))
          parts.push(`L=${n} ${maxAbs.toExponential(2)}`)
          expect(maxAbs).toBeLessThan(TOL)
        }
        console.log(`  ${c.name}: ${parts.join(", ")}`)
      } finally {
        model.dispose()
      }
    })
  }

  test("the comparison can fail: longrope at L0+1 scored with the short factors disagrees", async () => {
    const dir = tempDir()
    dirs.push(dir)
    const c = cases.find((x) => x.name.startsWith("longrope (Phi-3"))!
    const rm = writeRandomModel(dir, { hidden: 64, layers: 2, heads: 2, kvHeads: 1, headDim: HD, intermediate: 96, vocab: 89, seed: 99, ...c.model })
    const model = await loadLlama(await gpu(), dir)
    try {
      const tokens = randomTokens(33, 89, 5)
      const got = await model.logprobs(tokens)
      const wrong = referenceLogprobs(rm, tokens, { rope: c.rope(32) })
      let maxAbs = 0
      for (let i = 0; i < wrong.length; i++) maxAbs = Math.max(maxAbs, Math.abs(got[i]! - wrong[i]!))
      expect(maxAbs).toBeGreaterThan(1e-2)
    } finally {
      model.dispose()
    }
  })
})
