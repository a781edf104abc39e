/**
 * Parameters shared by the strategies that use LongRoPE's operators, their defaults (the paper's,
 * `evolution/default_hyper_params/dim_mono.json`), their Effect Schemas, and the checks that need the
 * model (dims, scale), which only a run can make.
 */
import { Schema } from "effect"
import { inputError } from "../../common/errors.ts"
import { decodeParams } from "../../common/schema.ts"
import { PAPER_START_TOKENS, type AttentionScaleGene, type Genes, type SpaceConfig, type StartTokenGene } from "./space.ts"
import type { SearchContext } from "./types.ts"

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

// ---- params as Effect Schemas: what the loader checks with positions, and `resolveParams` decodes ----

export const num = (message: string, ok: (x: number) => boolean) => Schema.Finite.check(Schema.makeFilter((x: number) => ok(x) || message))
export const int = (min: number) => Schema.Int.check(Schema.makeFilter((x: number) => x >= min || `expected an integer ≥ ${min}`))
export const positive = num("expected a positive number", (x) => x > 0)

/** The search-space fields every LongRoPE-operator strategy takes (all optional; defaults above). */
export const SpaceParamsFields = {
  space: Schema.optionalKey(Schema.Literals(["dim_mono", "dim_piece_mono", "longrope2"])),
  step: Schema.optionalKey(positive),
  p: Schema.optionalKey(num("expected a probability in (0, 1]", (x) => x > 0 && x <= 1)),
  mutation: Schema.optionalKey(Schema.Literals(["gene", "sweep"])),
  upper: Schema.optionalKey(Schema.NullOr(num("expected ≥ 1", (x) => x >= 1))),
  sigma: Schema.optionalKey(positive),
  criticalDim: Schema.optionalKey(Schema.NullOr(int(0))),
  sMin: Schema.optionalKey(Schema.NullOr(num("expected ≥ 1", (x) => x >= 1))),
  sMax: Schema.optionalKey(Schema.NullOr(num("expected ≥ 1", (x) => x >= 1))),
  lastGap: Schema.optionalKey(positive),
  startToken: Schema.optionalKey(
    Schema.NullOr(
      Schema.Union([
        Schema.Boolean,
        Schema.Struct({ values: Schema.NonEmptyArray(int(0)), topParents: int(0), mutantTries: int(0) }),
      ]),
    ).annotate({ message: "expected true, false, null or { values, topParents, mutantTries }" }),
  ),
  attentionScale: Schema.optionalKey(
    Schema.NullOr(
      Schema.Union([
        Schema.Boolean,
        Schema.Struct({ min: positive, max: positive, step: positive, sigma: positive }).check(
          Schema.makeFilter((m) => m.max >= m.min || { path: ["max"], issue: `expected ≥ min (${m.min})` }),
        ),
      ]),
    ).annotate({ message: "expected true, false, null or { min, max, step, sigma }" }),
  ),
  initStartToken: Schema.optionalKey(int(0)),
  initAttentionScale: Schema.optionalKey(positive),
} as const

/** Both bounds of the longrope2 space, when given, in order. */
export const sRange = Schema.makeFilter((p: { readonly sMin?: number | null; readonly sMax?: number | null }) =>
  p.sMin == null || p.sMax == null || p.sMax > p.sMin || { path: ["sMax"], issue: `expected more than sMin (${p.sMin})` })

/** Decodes a strategy's params (throws BadParams naming `search.<strategy>.<field>`). */
export const decodeStrategyParams = <A>(schema: Schema.Codec<A, any, never, never>, name: string, params: unknown): A => decodeParams(schema, params, `search.${name}`)

/** Builds the space and extra-gene config from context and params: the checks that need the model (dims, s). */
export function buildGenes(name: string, ctx: SearchContext, p: SpaceParams): Genes {
  if (!(Number.isInteger(ctx.dims) && ctx.dims >= 1)) throw inputError(where("context", "dims"), `expected an integer ≥ 1, got ${ctx.dims}`)
  if (!(ctx.scale > 0)) throw inputError(where("context", "scale"), `expected a positive number, got ${ctx.scale}`)
  const s = ctx.scale
  let space: SpaceConfig
  switch (p.space) {
    case "dim_mono": {
      const upper = p.upper ?? Math.max(1.25 * s, 1 + s)
      space = { kind: "dim_mono", dims: ctx.dims, step: p.step, lower: 1, upper }
      break
    }
    case "dim_piece_mono": {
      if (ctx.dims < 2) throw inputError(where(name, "space"), "dim_piece_mono needs at least 2 dims")
      space = { kind: "dim_piece_mono", dims: ctx.dims, step: p.step, scale: s, sigma: p.sigma }
      break
    }
    case "longrope2": {
      const cd = p.criticalDim
      if (cd === null) throw inputError(where(name, "criticalDim"), "required for the longrope2 space")
      if (cd >= ctx.dims) throw inputError(where(name, "criticalDim"), `expected an integer in [0, ${ctx.dims - 1}], got ${cd}`)
      const sMin = p.sMin ?? s
      const sMax = p.sMax ?? 2 * s
      if (!(sMax > sMin)) throw inputError(where(name, "sMax"), `expected 1 ≤ sMin < sMax, got ${sMin}, ${sMax}`)
      space = { kind: "longrope2", dims: ctx.dims, step: p.step, criticalDim: cd, sMin, sMax, lastGap: p.lastGap }
      break
    }
  }
  const startToken = geneOption(p.startToken, defaultStartToken)
  const attentionScale = geneOption(p.attentionScale, defaultAttentionScale(s))
  return { space, startToken, attentionScale, p: p.p, mutation: p.mutation }
}

/** An optional gene's setting: true → its defaults, false / null → off, else the object given. */
const geneOption = <G extends object>(v: G | boolean | null, defaults: G): G | undefined => (v === null || v === false ? undefined : v === true ? defaults : v)

/** Whether raw strategy params turn the gene `field` on (anything but absent, null or false). */
export const geneRequested = (raw: Readonly<Record<string, unknown>>, field: "startToken" | "attentionScale"): boolean =>
  raw[field] !== undefined && raw[field] !== null && raw[field] !== false
