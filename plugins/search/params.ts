/**
 * Parameters shared by the strategies that use LongRoPE's operators, their defaults (the paper's,
 * `evolution/default_hyper_params/dim_mono.json`) and validation.
 */
import { inputError } from "../../common/errors.ts"
import { PAPER_START_TOKENS, type AttentionScaleGene, type Genes, type SpaceConfig, type StartTokenGene } from "./space.ts"
import type { ParamIssue, SearchContext } from "./types.ts"

export type SpaceKind = "dim_mono" | "dim_piece_mono" | "longrope2"

export interface SpaceParams {
  readonly space: SpaceKind
  /** Grid step of the factors (0.01). */
  readonly step: number
  /** Per-gene mutation and crossover-visit probability (0.3). */
  readonly p: number
  /** "gene" (default) or "sweep" (the released code's mutation); see Genes.mutation. */
  readonly mutation: "gene" | "sweep"
  /**
   * dim_mono upper bound of λ. Default max(1.25·s, 1 + s): the paper's 1.25·s, which also covers the
   * released factor files that exceed 1 + s (2048k_la2_256k reaches 575.8 at s = 512), but never below
   * the released code's 1 + s (which matters for small s, e.g. short-length readjustment).
   */
  readonly upper: number | null
  /** dim_piece_mono: σ of the breakpoint mutation (2). */
  readonly sigma: number
  /** longrope2: the critical dimension (required for that space; see plugins/rope's criticalDim). */
  readonly criticalDim: number | null
  /** longrope2: lower bound of dims ≥ cd; default s (L′/L0). */
  readonly sMin: number | null
  /** longrope2: upper bound of dims ≥ cd; default 2·s (the published example's --length-scale). */
  readonly sMax: number | null
  /** longrope2: last dim ≤ previous + lastGap (4). */
  readonly lastGap: number
  /**
   * Search n̂ (try-start-token); true: the paper's set (`defaultStartToken`); null or false: n̂ is not part
   * of the genome (the released main branch).
   */
  readonly startToken: StartTokenGene | boolean | null
  /**
   * Search the attention scale m; true: [1, 1 + ln(s)/4] by 0.01 (`defaultAttentionScale`); null or false:
   * not part of the genome (the released code's TODO).
   */
  readonly attentionScale: AttentionScaleGene | boolean | null
  /** n̂ of init vectors that carry none. */
  readonly initStartToken: number
  /** m of init vectors that carry none (the stage passes e.g. the "su" value). */
  readonly initAttentionScale: number
}

export const defaultSpaceParams: SpaceParams = {
  space: "dim_mono",
  step: 0.01,
  p: 0.3,
  mutation: "gene",
  upper: null,
  sigma: 2,
  criticalDim: null,
  sMin: null,
  sMax: null,
  lastGap: 4,
  startToken: null,
  attentionScale: null,
  initStartToken: 0,
  initAttentionScale: 1,
}

export const defaultStartToken: StartTokenGene = { values: PAPER_START_TOKENS, topParents: 4, mutantTries: 5 }

export const defaultAttentionScale = (s: number): AttentionScaleGene => ({
  min: 1,
  max: Math.max(1.01, Number((1 + Math.log(Math.max(s, 1.0001)) / 4).toFixed(2))),
  step: 0.01,
  sigma: 0.02,
})

const where = (name: string, field: string): string => `search.${name}.${field}`

export function checkInt(name: string, field: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw inputError(where(name, field), `expected an integer ≥ ${min}, got ${v}`)
}

export function checkPositive(name: string, field: string, v: number): void {
  if (!(Number.isFinite(v) && v > 0)) throw inputError(where(name, field), `expected a positive number, got ${v}`)
}

/** Builds the space and extra-gene config from context and params, validating as it goes. */
export function buildGenes(name: string, ctx: SearchContext, p: SpaceParams): Genes {
  checkInt("context", "dims", ctx.dims, 1)
  checkPositive("context", "scale", ctx.scale)
  checkPositive(name, "step", p.step)
  if (!(p.p > 0 && p.p <= 1)) throw inputError(where(name, "p"), `expected a probability in (0, 1], got ${p.p}`)
  const s = ctx.scale
  let space: SpaceConfig
  switch (p.space) {
    case "dim_mono": {
      const upper = p.upper ?? Math.max(1.25 * s, 1 + s)
      if (!(upper >= 1)) throw inputError(where(name, "upper"), `expected ≥ 1, got ${upper}`)
      space = { kind: "dim_mono", dims: ctx.dims, step: p.step, lower: 1, upper }
      break
    }
    case "dim_piece_mono": {
      if (ctx.dims < 2) throw inputError(where(name, "space"), "dim_piece_mono needs at least 2 dims")
      checkPositive(name, "sigma", p.sigma)
      space = { kind: "dim_piece_mono", dims: ctx.dims, step: p.step, scale: s, sigma: p.sigma }
      break
    }
    case "longrope2": {
      const cd = p.criticalDim
      if (cd === null) throw inputError(where(name, "criticalDim"), "required for the longrope2 space")
      if (!Number.isInteger(cd) || cd < 0 || cd >= ctx.dims) throw inputError(where(name, "criticalDim"), `expected an integer in [0, ${ctx.dims - 1}], got ${cd}`)
      const sMin = p.sMin ?? s
      const sMax = p.sMax ?? 2 * s
      if (!(sMin >= 1 && sMax > sMin)) throw inputError(where(name, "sMax"), `expected 1 ≤ sMin < sMax, got ${sMin}, ${sMax}`)
      checkPositive(name, "lastGap", p.lastGap)
      space = { kind: "longrope2", dims: ctx.dims, step: p.step, criticalDim: cd, sMin, sMax, lastGap: p.lastGap }
      break
    }
    default:
      throw inputError(where(name, "space"), `expected dim_mono, dim_piece_mono or longrope2, got ${String(p.space)}`)
  }
  const startToken = geneOption(name, "startToken", p.startToken, defaultStartToken, "{ values, topParents, mutantTries }")
  if (startToken !== undefined) {
    const st = startToken
    if (!Array.isArray(st.values) || st.values.length === 0 || st.values.some((v) => !Number.isInteger(v) || v < 0)) throw inputError(where(name, "startToken.values"), "expected non-negative integers")
    checkInt(name, "startToken.topParents", st.topParents, 0)
    checkInt(name, "startToken.mutantTries", st.mutantTries, 0)
  }
  const attentionScale = geneOption(name, "attentionScale", p.attentionScale, defaultAttentionScale(s), "{ min, max, step, sigma }")
  if (attentionScale !== undefined) {
    const m = attentionScale
    if (!(m.min > 0 && m.max >= m.min)) throw inputError(where(name, "attentionScale"), `expected 0 < min ≤ max, got ${m.min}, ${m.max}`)
    checkPositive(name, "attentionScale.step", m.step)
    checkPositive(name, "attentionScale.sigma", m.sigma)
  }
  if (p.mutation !== "gene" && p.mutation !== "sweep") throw inputError(where(name, "mutation"), `expected "gene" or "sweep", got ${String(p.mutation)}`)
  return { space, startToken, attentionScale, p: p.p, mutation: p.mutation }
}

/** An optional gene's setting: true → its defaults, false / null → off, else the object given. */
function geneOption<G extends object>(name: string, field: string, v: G | boolean | null, defaults: G, shape: string): G | undefined {
  if (v === null || v === false) return undefined
  if (v === true) return defaults
  if (typeof v !== "object" || Array.isArray(v)) throw inputError(where(name, field), `expected true, false, null or ${shape}, got ${JSON.stringify(v)}`)
  return v
}

/** Whether raw strategy params turn the gene `field` on (anything but absent, null or false). */
export const geneRequested = (raw: Readonly<Record<string, unknown>>, field: "startToken" | "attentionScale"): boolean =>
  raw[field] !== undefined && raw[field] !== null && raw[field] !== false

/** Levenshtein distance, for "did you mean". */
const editDistance = (a: string, b: string): number => {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length]!
}

/**
 * A context large enough that no context-bound check fires on its own (dims 4096); the real one is only
 * known once the model is read, so errors that depend on it are left to the run.
 */
const LOOSE_CONTEXT: SearchContext = { dims: 4096, scale: 2, fidelity: { samples: 1, length: 2 }, init: [], seed: 0 }

/**
 * Context-free checks of a strategy's params: keys it does not know (strategies would otherwise ignore
 * them, silently running the default), value types against the defaults, then the strategy's own checks
 * on a loose context, kept only where they name a key the user wrote (a derived default's complaint may
 * not hold for the real model).
 */
export function checkStrategyParams(
  name: string,
  raw: Readonly<Record<string, unknown>>,
  defaults: (ctx: SearchContext) => object,
  resolve: (ctx: SearchContext, params: Readonly<Record<string, unknown>>) => unknown,
): ParamIssue[] {
  const d = defaults(LOOSE_CONTEXT) as Record<string, unknown>
  const known = Object.keys(d)
  const issues: ParamIssue[] = []
  for (const [k, v] of Object.entries(raw)) {
    if (!known.includes(k)) {
      const near = known.filter((n) => editDistance(n.toLowerCase(), k.toLowerCase()) <= 2)
      issues.push({ path: [k], at: "key", message: `unknown key "${k}" for search strategy "${name}"${near.length > 0 ? ` (did you mean ${near.map((n) => `"${n}"`).join(" or ")}?)` : ""}; known: ${known.join(", ")}` })
      continue
    }
    const def = d[k]
    if (typeof def === "number" && (typeof v !== "number" || !Number.isFinite(v))) issues.push({ path: [k], message: `expected a number, got ${JSON.stringify(v)}` })
    else if (typeof def === "string" && typeof v !== "string") issues.push({ path: [k], message: `expected a string, got ${JSON.stringify(v)}` })
  }
  if (issues.length > 0) return issues
  try {
    resolve(LOOSE_CONTEXT, raw)
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e)
    const m = /^search\.[^.:\s]+\.([^:\s]+): ([\s\S]*)$/.exec(msg)
    if (m === null) return [{ path: [], message: msg }]
    const path = m[1]!.split(".")
    if (path[0] !== undefined && path[0] in raw) issues.push({ path, message: m[2]! })
  }
  return issues
}
