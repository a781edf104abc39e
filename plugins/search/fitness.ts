/**
 * Fitness functions for the `search` stage: how a candidate RoPE table is scored (lower is better).
 *
 * A fitness plugin says which samples it scores at a fidelity (token ids plus the positions whose NLL
 * counts) and, optionally, how to score them; the default is LongRoPE's perplexity,
 * exp(mean over samples of the mean token NLL) (evaluation/perplexity.py: windows weigh equally).
 *
 * - `ppl-truncate` (LongRoPE, method notes §2.1/§5.1): each document cut to L−1 tokens, BOS prepended,
 *   one window per sample, every token scored.
 * - `needle-ppl` (LongRoPE2, §5.4): needle samples of exactly L tokens (plugins/data needleSample), only
 *   the answer tokens scored.
 *
 * The optional short-context penalty (`shortPenalty`, any fitness): the model's log-probability API gives
 * the target token's log-probability only, not whole next-token distributions, so the KL to the base
 * model cannot be computed; the penalty is the *increase in log-perplexity* at the original length
 * instead (a cross-entropy difference, KL's data-weighted analogue):
 *   fitness = F · exp(weight · max(0, ln PPL_candidate(L0) − ln PPL_base(L0)))
 * where the candidate keeps its table (λ, n̂, m) at L0 and the base uses the model's own RoPE.
 *
 * Plugins contribute more through the plugin API's `fitness` list (pipeline/workflow/plugin.ts).
 */
import { Schema } from "effect"
import { decodeParams, Fraction, NonNeg } from "../../common/schema.ts"
import type { FitnessFunction } from "../../pipeline/workflow/plugin.ts"
import { sha256 } from "../../common/hash.ts"
import type { RopeTable } from "../../kernels/rope-table.ts"
import { defaultInvFreq } from "../../kernels/rope-table.ts"
import { IGNORE_LABEL, needleSample } from "../data/prompts.ts"
import { Rng } from "../../common/rng.ts"
import type { SyntheticTask } from "../data/synthetic.ts"
import { type TextTokenizer, withBos } from "../data/tokenizer.ts"
import { mscale, type MscalePolicy, type RopeGeometry } from "../rope/factors.ts"
import type { Fidelity, Genome } from "./types.ts"

/** What a fitness needs from a model (LlamaModel satisfies it). */
export interface LogprobModel {
  /** `out[i] = ln p(tokens[i+1] | tokens[0..i])`, length n−1. */
  logprobs(tokens: Uint32Array | readonly number[], options?: { readonly rope?: RopeTable; readonly chunk?: number }): Promise<Float64Array>
}

/** One scored window. */
export interface FitnessSample {
  /** What the model sees (BOS included). */
  readonly tokens: Uint32Array
  /** Indices t ≥ 1 into `tokens` whose NLL counts; undefined: every t in 1..n−1. */
  readonly targets: Uint32Array | undefined
}

/** Where samples come from: documents (no BOS) of at least `minTokens` tokens, in a fixed order. */
export interface SampleSource {
  readonly tokenizer: TextTokenizer
  readonly seed: number
  /** Document i of the source with at least `minTokens` tokens; `tasks` steers a synthetic source. */
  readonly document: (i: number, minTokens: number, tasks: Partial<Record<SyntheticTask, number>> | undefined) => readonly number[]
}

export interface FitnessPlugin<P = unknown> extends FitnessFunction {
  readonly name: string
  /** Part of every cache key: bump it when scores change. */
  readonly version: string
  readonly description: string
  /** Fills defaults and validates (errors name `search.fitnessParams.<field>`). */
  readonly resolveParams: (raw: Readonly<Record<string, unknown>>) => P
  /** The params as an Effect Schema (every key optional): the search stage checks `fitnessParams` at load with it. */
  readonly params?: Schema.Codec<any, any, never, never>
  /** The samples at a fidelity; a pure function of (source, params, fidelity). */
  readonly samples: (source: SampleSource, params: P, fidelity: Fidelity) => FitnessSample[]
  /** Scores a table on the samples; default `perplexity`. */
  readonly evaluate?: (model: LogprobModel, samples: readonly FitnessSample[], table: RopeTable, chunk: number | undefined) => Promise<number>
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyFitness = FitnessPlugin<any>

/** exp(mean over samples of the mean NLL over each sample's targets). */
export async function perplexity(model: LogprobModel, samples: readonly FitnessSample[], table: RopeTable, chunk?: number): Promise<number> {
  if (samples.length === 0) throw new Error("perplexity: no samples")
  let sum = 0
  for (const s of samples) sum += meanNll(await model.logprobs(s.tokens, chunk === undefined ? { rope: table } : { rope: table, chunk }), s)
  return Math.exp(sum / samples.length)
}

/** Mean NLL of one sample from its log-probabilities (lp[t−1] scores tokens[t]). */
export function meanNll(lp: Float64Array, s: FitnessSample): number {
  if (s.targets === undefined) {
    let nll = 0
    for (let i = 0; i < lp.length; i++) nll -= lp[i] as number
    return nll / lp.length
  }
  if (s.targets.length === 0) throw new Error("fitness sample with no scored tokens")
  let nll = 0
  for (const t of s.targets) nll -= lp[t - 1] as number
  return nll / s.targets.length
}

/** Content hash of samples (what the cache keys on instead of document ids, so any source change shows). */
export function samplesHash(samples: readonly FitnessSample[]): string {
  const parts: string[] = []
  for (const s of samples) parts.push(Buffer.from(s.tokens.buffer, s.tokens.byteOffset, s.tokens.byteLength).toString("base64"), s.targets === undefined ? "*" : Array.from(s.targets).join(","))
  return sha256(parts.join("|"))
}

const WHERE = "search.fitnessParams"

// ---- ppl-truncate ------------------------------------------------------------------------------

export type PplTruncateParams = Record<string, never>
/** No params: any key is unknown (an empty Struct alone would accept any object). */
const PplTruncateSchema = Schema.Struct({}).check(Schema.makeFilter((o) => Object.keys(o).map((k) => ({ path: [k], issue: `unknown key "${k}"` }))))

export const pplTruncate: FitnessPlugin<PplTruncateParams> = {
  name: "ppl-truncate",
  version: "1",
  description: "LongRoPE's perplexity: each sample cut to L−1 tokens with BOS prepended, one window per sample",
  params: PplTruncateSchema,
  resolveParams: (raw) => (decodeParams(PplTruncateSchema, raw, WHERE), {}),
  samples: (source, _p, f) => {
    const bos = withBos(source.tokenizer, []).length
    const body = f.length - bos
    return Array.from({ length: f.samples }, (_, i) => {
      const doc = source.document(i, body, undefined)
      return { tokens: Uint32Array.from(withBos(source.tokenizer, doc.slice(0, body))), targets: undefined }
    })
  },
}

// ---- needle-ppl --------------------------------------------------------------------------------

export interface NeedlePplParams {
  /** Needle depth per sample; default from the sample's own seeded stream (same at every length). */
  readonly depths: readonly number[] | null
}

const NeedlePplSchema = Schema.Struct({
  depths: Schema.optionalKey(Schema.NullOr(Schema.Array(Fraction)).annotate({ message: "expected a list of numbers in [0, 1]", description: "needle depth per sample (default: each sample's own seeded draw)" })),
})

export const needlePpl: FitnessPlugin<NeedlePplParams> = {
  name: "needle-ppl",
  version: "1",
  description: "LongRoPE2's needle-driven perplexity: L-token needle samples, NLL on the answer tokens only",
  params: NeedlePplSchema,
  resolveParams: (raw) => ({ depths: decodeParams(NeedlePplSchema, raw, WHERE).depths ?? null }),
  samples: (source, p, f) =>
    Array.from({ length: f.samples }, (_, i) => {
      // Filler documents: the needle is the only fact, as in the PG19 books the paper uses.
      const doc = source.document(i, f.length, { filler: 1 })
      const depth = p.depths === null ? undefined : p.depths[i % p.depths.length]
      const s = needleSample({
        tokenizer: source.tokenizer,
        document: doc,
        seqLen: f.length,
        rng: Rng.seeded(source.seed, 0x6e65, i),
        ...(depth === undefined ? {} : { depth }),
      })
      const targets: number[] = []
      for (let t = 1; t < s.labels.length; t++) if (s.labels[t] !== IGNORE_LABEL) targets.push(t)
      return { tokens: Uint32Array.from(s.ids), targets: Uint32Array.from(targets) }
    }),
}

// ---- registry ----------------------------------------------------------------------------------

const builtins = new Map<string, AnyFitness>([
  [pplTruncate.name, pplTruncate],
  [needlePpl.name, needlePpl],
])

export const builtinFitness: readonly AnyFitness[] = [...builtins.values()]

export const isFitnessPlugin = (u: unknown): u is AnyFitness =>
  typeof u === "object" && u !== null && typeof (u as AnyFitness).name === "string" && typeof (u as AnyFitness).samples === "function" && typeof (u as AnyFitness).resolveParams === "function"

/** A built-in fitness by name. */
export function getFitness(name: string): AnyFitness | undefined {
  return builtins.get(name)
}

// ---- short-context penalty ---------------------------------------------------------------------

export interface ShortPenalty {
  readonly weight: number
  /** The length it is measured at; default L0. */
  readonly length: number
  readonly samples: number
}

/** `fitnessParams.shortPenalty` (any fitness): false / null for none. */
export const ShortPenaltySchema = Schema.NullOr(
  Schema.Union([
    Schema.Literal(false),
    Schema.Struct({
      weight: Schema.optionalKey(NonNeg),
      length: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))),
      samples: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))),
    }),
  ]),
)

/** The penalty with its defaults: weight 1, at L0, max(2, samples) samples; null when off. */
export function resolveShortPenalty(raw: unknown, L0: number, samples: number): ShortPenalty | null {
  if (raw === undefined) return null
  const p = decodeParams(ShortPenaltySchema, raw, `${WHERE}.shortPenalty`)
  if (p === null || p === false) return null
  return { weight: p.weight ?? 1, length: p.length ?? L0, samples: p.samples ?? Math.max(2, samples) }
}

/** F · exp(w · max(0, ln PPL_cand − ln PPL_base)). */
export const applyPenalty = (fitness: number, weight: number, pplCandidate: number, pplBase: number): number =>
  fitness * Math.exp(weight * Math.max(0, Math.log(pplCandidate) - Math.log(pplBase)))

// ---- genome → RoPE table -----------------------------------------------------------------------

export interface TableOptions {
  readonly geometry: RopeGeometry
  /** Target length L: m follows the policy at s = L/L0 when the genome has no m. */
  readonly length: number
  readonly policy: MscalePolicy
  /** n̂ when the genome has none. */
  readonly startTokens?: number
  /** Multiplies the genome's factors element-wise (`second` mode: λ_ft). */
  readonly baseFactors?: readonly number[]
}

/** The absolute factors a genome stands for (λ_rel ⊙ λ_ft in `second` mode). */
export function absoluteFactors(g: Genome, baseFactors?: readonly number[]): number[] {
  if (baseFactors === undefined) return [...g.factors]
  if (baseFactors.length !== g.factors.length) throw new Error(`base factors have ${baseFactors.length} values, the genome ${g.factors.length}`)
  return g.factors.map((x, i) => x * (baseFactors[i] as number))
}

/** invFreq_i = θ_i / λ_i; m = the genome's, else the policy at L/L0; n̂ = the genome's, else the default. */
export function genomeTable(g: Genome, o: TableOptions): RopeTable {
  const { rotaryDim, base, originalLength } = o.geometry
  const factors = absoluteFactors(g, o.baseFactors)
  if (factors.length !== rotaryDim / 2) throw new Error(`a genome has ${factors.length} factors, the model's rotary dim needs ${rotaryDim / 2}`)
  const theta = defaultInvFreq(base, rotaryDim)
  return {
    rotaryDim,
    invFreq: theta.map((t, i) => t / (factors[i] as number)),
    originalInvFreq: theta,
    startTokens: g.startToken ?? o.startTokens ?? 0,
    attentionScale: g.attentionScale ?? mscale(o.policy, o.length / originalLength, originalLength),
  }
}
