/**
 * The `search` stage: LongRoPE's factor search on a model, driven by a search-strategy plugin and scored by
 * a fitness plugin. The modes (first / second / readjust) are plugins/search/modes.ts; the loop with its
 * candidate cache, checkpoint and logs is plugins/search/run.ts; where evaluations run (this step's model,
 * or the cluster's workers when a workflow has `cluster:`) is plugins/search/evaluator.ts.
 *
 * Resume: the strategy state, the log and the timing go atomically into ctx.checkpointDir after every
 * batch; every evaluation goes through the candidate cache (default `_search-cache` next to the store's
 * checkpoints), so a re-run of a finished search evaluates nothing.
 *
 * Outputs: `factors` (ropeway factor-set file, plugins/rope/formats.ts, with provenance) and `log`, a
 * folder with search-log.json, longrope-log.json and result_*.csv; readjust writes one such set per
 * length under log/<length>/.
 *
 * Model quirks (Mistral, §2.3/§2.5): `originalLength` overrides L0, `betaFast`/`betaSlow` the YaRN-init ramp,
 * `slidingWindow: null` loads the model without its window (full attention; workers get the same flag).
 *
 * Two stage names, one implementation: `search` (input `model`; `second`/`readjust` then read the table
 * the model folder's config.json carries) and `search-factors` (inputs `model` and `factors`), because a
 * workflow must wire every input a stage declares.
 */
import { Effect, Option, Schema } from "effect"
import { readFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { inputError, TokenizerMismatch } from "../common/errors.ts"
import { writeFileAtomic } from "../common/files.ts"
import { hashPath } from "../common/hash.ts"
import { PosInt } from "../common/schema.ts"
import { PluginRegistry, type Registry } from "../pipeline/workflow/plugin.ts"
import { defineStage, type Json, type ParamIssue, type StageContext, type ValidateContext } from "../pipeline/workflow/stage.ts"
import { SearchDataParams } from "../plugins/data/params.ts"
import { inspectModel } from "../plugins/models/registry.ts"
import { type FactorSetFile, formatFactorSetFile, parseFactorSetFile } from "../plugins/rope/formats.ts"
import { resolveRope } from "../plugins/rope/index.ts"
import { CandidateCache } from "../plugins/search/cache.ts"
import { findFitness, findStrategy, searchPluginIssues } from "../plugins/search/checks.ts"
import { localEvaluator, SearchEvaluator } from "../plugins/search/evaluator.ts"
import { resolveShortPenalty } from "../plugins/search/fitness.ts"
import { type InputSets, type ModeSetup, planMode, readInputSets, type SearchMode } from "../plugins/search/modes.ts"
import { type Env, runJobs, writeLogs } from "../plugins/search/run.ts"
import { sampleSource } from "../plugins/search/samples.ts"
import type { Genome } from "../plugins/search/types.ts"
import { attempt, corpusPath, fail, inputPath, modelFamilies, openModel, openTokenizer } from "./kit.ts"

const Obj = Schema.Record(Schema.String, Schema.Unknown)

export const SearchParams = Schema.Struct({
  mode: Schema.optionalKey(Schema.Literals(["first", "second", "readjust"])),
  /** A strategy name (plugins/search or a plugin's `searchStrategies`); default "evolutionary". */
  strategy: Schema.optionalKey(Schema.String),
  /** The strategy's own params, checked against its schema when the workflow is loaded. */
  strategyParams: Schema.optionalKey(Obj),
  /** A fitness name (built-ins: ppl-truncate, needle-ppl; or a plugin's `fitness`); default ppl-truncate. */
  fitness: Schema.optionalKey(Schema.String),
  /** The fitness' own params, plus `shortPenalty: {weight, length?, samples?}` for any fitness. */
  fitnessParams: Schema.optionalKey(Obj),
  /** Target length L (first, second). */
  length: Schema.optionalKey(PosInt),
  /** Short lengths (readjust). */
  lengths: Schema.optionalKey(Schema.Array(PosInt)),
  /** Samples at full fidelity (the paper: 5). */
  samples: Schema.optionalKey(PosInt),
  /** Cheaper fidelities for multi-fidelity strategies, cheapest first. */
  fidelities: Schema.optionalKey(Schema.Array(Schema.Struct({ samples: PosInt, length: PosInt }))),
  /** {source: "synthetic", seed?, tasks?, filler?} (default) or {source: "corpus", path, field?} (path relative to the workflow file); documents in order. */
  data: Schema.optionalKey(SearchDataParams),
  /** "byte" or a folder with tokenizer.json; default the model folder's tokenizer.json, else "byte". */
  tokenizer: Schema.optionalKey(Schema.NonEmptyString),
  /** m when the genome has no m gene: "su" (default), "yarn" or a number. */
  mscale: Schema.optionalKey(Schema.Union([Schema.Literals(["su", "yarn"]), Schema.Finite])),
  /** Tokens per forward chunk. */
  chunk: Schema.optionalKey(PosInt),
  /** The candidate cache folder; default <store>/_search-cache. */
  cacheDir: Schema.optionalKey(Schema.String),
  /**
   * L0, the original context, instead of config.json's original_max_position_embeddings (else
   * max_position_embeddings): e.g. 4096 for Mistral-7B-v0.1, whose window LongRoPE reads as L0 (§2.5).
   * Mode first; second and readjust take L0 from the factor set, and a different value is an error.
   */
  originalLength: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))),
  /** YaRN-init's β_fast / β_slow for the initial population (default 32 / 1, LLaMA; Mistral: 128 / 2, §2.3). */
  betaFast: Schema.optionalKey(Schema.Finite.check(Schema.isGreaterThan(0))),
  betaSlow: Schema.optionalKey(Schema.Finite.check(Schema.isGreaterThan(0))),
  /**
   * null: ignore the model's sliding window for this search, i.e. full attention at every length, as
   * LongRoPE ran Mistral (issue #8: window set past the longest input). Default: as config.json says.
   */
  slidingWindow: Schema.optionalKey(Schema.Null),
})
export type SearchParams = typeof SearchParams.Type

/** What the loader checks beyond the schema, before the model is read: the lengths a mode needs, β order, the plugins' params. */
export function validateSearchParams(p: SearchParams, registry: Registry | undefined): ParamIssue[] {
  const issues: ParamIssue[] = []
  const mode = p.mode ?? "first"
  if (mode !== "readjust" && p.length === undefined) issues.push({ path: [], message: `missing key "length": the target length, required in mode "${mode}"` })
  if (mode === "readjust" && (p.lengths === undefined || p.lengths.length === 0)) issues.push({ path: [], message: 'missing key "lengths": the short lengths to readjust, required in mode "readjust"' })
  if (p.betaFast !== undefined && p.betaSlow !== undefined && !(p.betaFast > p.betaSlow)) {
    issues.push({ path: ["betaSlow"], message: `expected β_slow < β_fast (${p.betaFast}), got ${p.betaSlow}` })
  }
  return [...issues, ...searchPluginIssues(registry, p)]
}

// 2: mode second also seeds λ_rel = 1 (a store made by 1 would reuse second searches that never tried it)
export const SEARCH_VERSION = "2"

type Ctx = StageContext<SearchParams, string, string>

/** The model as its family reads it (no GPU), the strategy, fitness, input sets and everything a mode needs. */
function setUp(ctx: Ctx, modelDir: string, registry: Registry | undefined) {
  return Effect.gen(function* () {
    const p = ctx.params
    const mode: SearchMode = p.mode ?? "first"
    const families = yield* modelFamilies
    return yield* attempt("search", () => {
      const { model } = inspectModel(families, modelDir, p.slidingWindow === null ? { fullAttention: true } : {})
      const spec = model.config.rope
      const strategy = findStrategy(registry, p.strategy ?? "evolutionary")
      const fitness = findFitness(registry, p.fitness ?? "ppl-truncate")
      const { shortPenalty, ...fp } = p.fitnessParams ?? {}
      const fitnessParams = fitness.resolveParams(fp)
      const samples = p.samples ?? 5
      const configFile = join(modelDir, "config.json")
      const inputSets: InputSets | undefined = mode === "first" ? undefined : readInputSets(mode, spec, configFile, inputPath(ctx, "factors"), (f) => readFileSync(f, "utf8"))
      if (inputSets !== undefined && p.originalLength !== undefined && p.originalLength !== inputSets.L0) {
        throw inputError("search.originalLength", `${p.originalLength} differs from the factor set's L0 ${inputSets.L0} (${inputSets.path}); in mode "${mode}" L0 comes from the factor set`)
      }
      const L0 = inputSets?.L0 ?? p.originalLength ?? spec.originalMaxPositions ?? spec.maxPositions
      const penalty = resolveShortPenalty(shortPenalty, L0, samples)
      const setup: ModeSetup = {
        geometry: { rotaryDim: spec.rotaryDim, base: spec.base, originalLength: L0 },
        L0,
        samples,
        fidelities: p.fidelities?.map((f) => ({ samples: f.samples, length: f.length })),
        policy: p.mscale,
        yarn: { ...(p.betaFast === undefined ? {} : { betaFast: p.betaFast }), ...(p.betaSlow === undefined ? {} : { betaSlow: p.betaSlow }) },
        strategyParams: p.strategyParams ?? {},
        seed: ctx.seed,
        inputSets,
      }
      return { mode, model, spec, strategy, fitness, fitnessParams, fitnessKeyParams: { ...(fitnessParams as object), shortPenalty: penalty }, penalty, setup }
    })
  })
}

type Setup = Effect.Success<ReturnType<typeof setUp>>

/** The evaluator: a provided one (the cluster's workers) needs no model here; else this step's model. */
const evaluatorFor = (ctx: Ctx, modelDir: string, s: Setup, maxLength: number) =>
  Effect.gen(function* () {
    const provided = Option.getOrUndefined(yield* Effect.serviceOption(SearchEvaluator))
    if (provided !== undefined) return provided
    const options = ctx.params.slidingWindow === null ? { fullAttention: true } : {}
    const model = yield* openModel(modelDir, { length: maxLength, options, ...(ctx.params.chunk === undefined ? {} : { chunk: ctx.params.chunk }) })
    // The model's own RoPE (the penalty's base), resolved on first use so a bad config fails only if needed.
    let base: ((length: number) => ReturnType<ReturnType<typeof resolveRope>>) | undefined
    return localEvaluator(model, s.fitness, (length) => (base ??= resolveRope(s.spec))(length))
  })

/** The search's environment: evaluator, samples, candidate cache, counters. */
function makeEnv(ctx: Ctx, modelDir: string, s: Setup, maxLength: number) {
  return Effect.gen(function* () {
    const evaluator = yield* evaluatorFor(ctx, modelDir, s, maxLength)
    const tokenizer = yield* attempt("search", () => openTokenizer(ctx.params.tokenizer, modelDir))
    const vocab = s.model.config.vocabSize
    if (tokenizer.vocabSize > vocab) {
      return yield* new TokenizerMismatch({ message: `search.tokenizer: tokenizer ${tokenizer.name} has ${tokenizer.vocabSize} ids but the model's vocab_size is ${vocab}`, tokenizerVocab: tokenizer.vocabSize, modelVocab: vocab })
    }
    const env: Env = {
      checkpointDir: ctx.checkpointDir, progress: ctx.progress, fullAttention: ctx.params.slidingWindow === null, evaluator,
      modelDir: resolve(modelDir), modelHash: hashPath(modelDir), samples: new Map(), fitness: s.fitness, fitnessParams: s.fitnessParams,
      fitnessKeyParams: s.fitnessKeyParams, penalty: s.penalty, source: yield* attempt("search", () => sampleSource(ctx.params.data, ctx.seed, tokenizer, maxLength)),
      geometry: s.setup.geometry, cache: new CandidateCache(ctx.params.cacheDir ?? resolve(dirname(ctx.checkpointDir), "..", "_search-cache")),
      chunk: ctx.params.chunk, counts: { evaluated: 0, cached: 0 },
    }
    return env
  })
}

/** The factor-set file (checked by the reader every consumer uses) and the logs. */
function writeOutputs(ctx: Ctx, s: Setup, finished: { sets: FactorSetFile["sets"]; lengths: number[]; scale: number }, bestFitness: readonly number[]) {
  const out = ctx.outputs as unknown as { readonly factors: string; readonly log: string }
  const file: FactorSetFile = {
    format: "ropeway-factor-set",
    version: 1,
    model: { rotary_dim: s.spec.rotaryDim, base: s.spec.base, original_max_position_embeddings: s.setup.L0, num_hidden_layers: s.spec.numLayers },
    sets: finished.sets,
    provenance: {
      method: "search",
      run_id: ctx.key,
      lengths: finished.lengths,
      scale: finished.scale,
      source: `${s.mode} search, strategy ${s.strategy.name}, fitness ${s.fitness.name}, step ${ctx.step}`,
      notes: `best fitness ${bestFitness.join(", ")}${s.mode === "second" ? "; factors are λ_rel ⊙ λ_ft" : ""}`,
    },
  }
  writeFileAtomic(out.factors, formatFactorSetFile(parseFactorSetFile(formatFactorSetFile(file), "search output")))
  return out.log
}

const encodeGenome = (g: Genome): Json => {
  const out: { [k: string]: Json } = { factors: [...g.factors] }
  for (const k of ["startToken", "attentionScale", "alpha", "beta"] as const) if (g[k] !== undefined) out[k] = g[k]
  return out
}

export function runSearchStage(ctx: Ctx) {
  return Effect.gen(function* () {
    const modelDir = inputPath(ctx, "model")
    if (modelDir === undefined) return yield* fail("search: input `model` (a Hugging Face model folder) is required")
    const registry = Option.getOrUndefined(yield* Effect.serviceOption(PluginRegistry))
    const s = yield* setUp(ctx, modelDir, registry)
    const plan = yield* attempt("search", () => planMode(s.mode, s.setup, ctx.params))
    const maxLength = Math.max(...plan.jobs.map((j) => j.sctx.fidelity.length), s.penalty?.length ?? 0)
    const env = yield* makeEnv(ctx, modelDir, s, maxLength)
    const t0 = performance.now()
    const { results, bests } = yield* runJobs(env, s.strategy, plan.jobs)
    yield* attempt("search: writing outputs", () => {
      const log = writeOutputs(ctx, s, plan.finish(bests.map((b) => b.genome)), bests.map((b) => b.fitness))
      plan.jobs.forEach((job, k) => writeLogs(job.tag === "" ? log : join(log, job.tag), s.strategy, results[k]!, job.table.baseFactors))
    })
    return {
      mode: s.mode,
      strategy: s.strategy.name,
      fitness: s.fitness.name,
      best: bests.map((b) => b.fitness),
      evaluations: results.map((cp) => s.strategy.progress(cp.state).evaluations),
      evaluated: env.counts.evaluated,
      cached: env.counts.cached,
      seconds: (performance.now() - t0) / 1000,
      genome: bests.map((b) => encodeGenome(b.genome)),
    } satisfies Json
  }).pipe(Effect.scoped)
}

const stageDef = {
  version: SEARCH_VERSION,
  params: SearchParams,
  run: (ctx: Ctx) => runSearchStage(ctx),
  validate: (p: SearchParams, ctx: ValidateContext) => validateSearchParams(p, ctx.registry),
  paths: corpusPath,
} as const

/** `search`: the model only; modes second/readjust read the table the model folder carries. */
export const searchStage = defineStage({
  ...stageDef,
  name: "search",
  description: "LongRoPE factor search (first / second / readjust) with a strategy and a fitness plugin",
  inputs: { model: "model" },
  outputs: { factors: "rope-factors", log: "search-log" },
})

/** `search-factors`: the same with the model's factor set as an input (a rope.json from an earlier search). */
export const searchFactorsStage = defineStage({
  ...stageDef,
  name: "search-factors",
  description: "LongRoPE second search / readjustment on a model and its factor set",
  inputs: { model: "model", factors: "rope-factors" },
  outputs: { factors: "rope-factors", log: "search-log" },
})
