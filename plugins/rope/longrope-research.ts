/**
 * `longrope-research`: LongRoPE's research extensions in one rope_scaling object (ropeway's own type;
 * also what a factor-set file (formats.ts) turns into).
 *
 *   {
 *     "rope_type": "longrope-research",
 *     "original_max_position_embeddings": 4096,        // L0 (or at the top level of config.json)
 *     "mscale": "su" | "yarn" | 1.12,                  // default policy for every set; default "su"
 *     "start_tokens": 0,                                // default n̂ for every set
 *     "critical_dim": 45 | "auto",                      // optional LongRoPE2 ramp: λ_i = λ_cd^(i/cd), i < cd
 *     "dynamic": false,                                 // optional: re-target the chosen set to the length
 *     "sets": [                                         // ordered by max_length, strictly increasing
 *       { "max_length": 8192, "factors": [...d/2], "mscale"?: ..., "start_tokens"?: 4, "scale"?: 2 },
 *       { "max_length": 262144, "factors": [[...d/2] × num_hidden_layers] }   // per-layer factors
 *     ]
 *   }
 *
 * Choice: the first set whose max_length ≥ length (the research code's length buckets); beyond the last
 * bucket the last set. A set's scale s is `scale`, else max_length / L0; its attention scale m follows its
 * policy at s ("su": sqrt(1 + ln s/ln L0), "yarn": 0.1 ln s + 1, a number: itself; 1 when s ≤ 1).
 * With `dynamic`, λ_i(L) = 1 + (λ_i − 1)(L/L0 − 1)/(s − 1) with L/L0 clamped to [1, s], and m follows L/L0
 * too (the internal LongRoPE code's behaviour). Positions below n̂ keep the original rotation (kernel side).
 */
import { inputError } from "../../common/errors.ts"
import { criticalDim, criticalDimRamp, dynamicLongropeFactors, mscale, type MscalePolicy } from "./factors.ts"
import { factorVector, Params, show } from "./params.ts"
import { chosen, divide, fmt } from "./table.ts"
import type { RopeMethod, RopeSpec } from "./types.ts"

export interface ResearchSet {
  readonly maxLength: number
  /** One divisor vector, or one per layer. */
  readonly factors: Float64Array | readonly Float64Array[]
  readonly scale: number
  readonly mscale: MscalePolicy
  readonly startTokens: number
}

export interface ResearchParams {
  readonly originalLength: number
  readonly sets: readonly ResearchSet[]
  readonly criticalDim: number | undefined
  readonly dynamic: boolean
}

function readPolicy(v: unknown, field: string): MscalePolicy | undefined {
  if (v === undefined || v === null) return undefined
  if (v === "su" || v === "yarn") return v
  if (typeof v === "number" && Number.isFinite(v) && v > 0) return v
  throw inputError(field, `expected "su", "yarn" or a number > 0, got ${show(v)}`)
}

function readStart(v: unknown, field: string): number | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v === "number" && Number.isInteger(v) && v >= 0) return v
  throw inputError(field, `expected an integer ≥ 0, got ${show(v)}`)
}

/** A vector, or a layers × d/2 matrix (one row broadcasts to every layer). */
function readFactors(v: unknown, spec: RopeSpec, field: string): Float64Array | Float64Array[] {
  const half = spec.rotaryDim / 2
  if (Array.isArray(v) && v.length > 0 && Array.isArray(v[0])) {
    if (v.length !== 1 && v.length !== spec.numLayers) {
      throw inputError(field, `expected ${spec.numLayers} rows (num_hidden_layers) of ${half} factors, or one row, got ${v.length} rows`)
    }
    const rows = v.map((row: unknown, l) => factorVector(row, half, `${field}[${l}]`))
    return rows.length === 1 ? rows[0]! : rows
  }
  return factorVector(v, half, field)
}

export function readResearch(spec: RopeSpec): ResearchParams {
  const p: Params = new Params(spec)
  const originalLength = p.originalMax(true)!
  const defaultPolicy = readPolicy(p.obj["mscale"], p.field("mscale")) ?? "su"
  const defaultStart = readStart(p.obj["start_tokens"], p.field("start_tokens")) ?? 0
  const dynamic = p.bool("dynamic") ?? false
  let cd: number | undefined
  const cdRaw = p.obj["critical_dim"]
  if (cdRaw === "auto") cd = criticalDim({ rotaryDim: spec.rotaryDim, base: spec.base, originalLength })
  else if (cdRaw !== undefined && cdRaw !== null) {
    if (typeof cdRaw !== "number" || !Number.isInteger(cdRaw) || cdRaw < 0 || cdRaw >= spec.rotaryDim / 2) {
      p.fail("critical_dim", `"auto" or an integer in [0, ${spec.rotaryDim / 2 - 1}]`, cdRaw)
    }
    cd = cdRaw
  }
  const rawSets = p.obj["sets"]
  if (!Array.isArray(rawSets) || rawSets.length === 0) {
    p.fail("sets", "a non-empty list of {max_length, factors, mscale?, start_tokens?, scale?}", rawSets)
  }
  let prev = 0
  const sets = rawSets.map((raw: unknown, k): ResearchSet => {
    const where = p.field(`sets[${k}]`)
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw inputError(where, `expected an object {max_length, factors, ...}, got ${show(raw)}`)
    }
    const sp: Params = new Params(spec, raw as Record<string, unknown>, where)
    const maxLength = sp.requireNum("max_length", { positive: true, integer: true })
    if (maxLength <= prev) sp.fail("max_length", `an integer > ${prev} (sets ordered by max_length)`, maxLength)
    prev = maxLength
    let factors = readFactors(sp.obj["factors"], spec, sp.field("factors"))
    if (cd !== undefined) {
      const c = cd
      factors = factors instanceof Float64Array ? criticalDimRamp(factors, c) : factors.map((f) => criticalDimRamp(f, c))
    }
    return {
      maxLength,
      factors,
      scale: sp.num("scale", { positive: true }) ?? maxLength / originalLength,
      mscale: readPolicy(sp.obj["mscale"], sp.field("mscale")) ?? defaultPolicy,
      startTokens: readStart(sp.obj["start_tokens"], sp.field("start_tokens")) ?? defaultStart,
    }
  })
  return { originalLength, sets, criticalDim: cd, dynamic }
}

export const longropeResearchMethod: RopeMethod = {
  name: "longrope-research",
  resolve: (spec) => {
    const rp = readResearch(spec)
    const L0 = rp.originalLength
    return (length) => {
      const k = rp.sets.findIndex((s) => length <= s.maxLength)
      const set = rp.sets[k === -1 ? rp.sets.length - 1 : k]!
      const why =
        k === -1
          ? `length ${length} beyond the last set (max_length ${set.maxLength}): last set`
          : `set ${k} of ${rp.sets.length}: length ${length} ≤ max_length ${set.maxLength}` +
            (k > 0 ? ` and > ${rp.sets[k - 1]!.maxLength}` : "")
      let factors = set.factors
      let s = set.scale
      if (rp.dynamic && set.scale > 1) {
        s = Math.min(Math.max(length / L0, 1), set.scale)
        const f = (v: Float64Array) => dynamicLongropeFactors(v, set.scale, length, L0)
        factors = factors instanceof Float64Array ? f(factors) : factors.map(f)
      }
      const attentionScale = mscale(set.mscale, s, L0)
      const invFreq = factors instanceof Float64Array ? divide(spec, factors) : factors.map((f) => divide(spec, f))
      const policy = typeof set.mscale === "number" ? "fixed" : `"${set.mscale}" at s=${fmt(s)}`
      return chosen(spec, {
        method: "longrope-research",
        reason:
          `${why}${rp.dynamic && set.scale > 1 ? `, re-targeted to s=${fmt(s)}` : ""}` +
          `${rp.criticalDim !== undefined ? `, critical dim ${rp.criticalDim}` : ""}; n̂ ${set.startTokens}; ` +
          `attention ${fmt(attentionScale)} (${policy})`,
        invFreq,
        attentionScale,
        startTokens: set.startTokens,
      })
    }
  },
}
