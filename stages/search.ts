/**
 * The `search` stage: LongRoPE's factor search on a model, driven by a search-strategy plugin and scored
 * by a fitness plugin (plugins/search). The stage owns evaluation, the on-disk candidate cache, the logs
 * and resume; the strategy only proposes and learns.
 *
 * Modes (method notes §2–§3):
 * - `first`: on a base model at target length L, s = L/L0; the genome is λ itself; the initial
 *   population is PI, NTK, YaRN-init and HF YaRN at s (the last with YaRN's own m when m is a gene).
 *   Writes [identity ≤ L0, searched ≤ L].
 * - `second`: on a fine-tuned model whose factor set (input `factors`) ends with λ_ft at L_ft; the genome
 *   is a relative vector λ_rel at s = L/L_ft initialised from YaRN-init at that scale and from λ_rel = 1 (the
 *   fine-tuned set as it is: right when the fine-tune trained positions beyond L_ft); the model runs
 *   with λ_rel ⊙ λ_ft and the product is saved, appended to the input's sets.
 * - `readjust`: searches at short `lengths` on the extended model (input `factors`), each initialised
 *   from the set serving that length (as is and re-targeted), YaRN-init, PI and NTK; writes the
 *   length-bucketed table: the readjusted short sets, then the input's sets above them.
 *
 * Resume: the strategy state (JSON), the log and the timing go atomically into ctx.checkpointDir after
 * every batch; a restarted step continues from there. Every evaluation goes through the candidate cache
 * (plugins/search/cache.ts; default folder `_search-cache` next to the store's checkpoints), so the
 * batch that was running when a run was killed is not evaluated again, a resumed run sees exactly the
 * values the uninterrupted one saw, and a re-run of a finished search evaluates nothing. Interruption
 * lands between evaluations (each evaluation is uninterruptible: a GPU forward cannot be abandoned).
 *
 * Evaluation: each cache miss becomes a FitnessRequest (plain data) for the SearchEvaluator service:
 * absent, the step's own model scores it (one at a time); provided (pipeline/cluster, a workflow's
 * `cluster:`), workers score a whole batch at once. Both run evaluateFitnessRequest, so the values agree.
 *
 * Outputs: `factors` (ropeway factor-set file, plugins/rope/formats.ts, with provenance) and `log`, a
 * folder with search-log.json (ours), longrope-log.json (LongRoPE's), result_final.csv and
 * result_itNNN.csv (best absolute factors per generation); readjust writes one such set per length
 * under log/<length>/. The logs hold the strategy's genomes (relative ones in `second` mode, like
 * LongRoPE's --search_twice log); the CSVs and the factor-set file hold absolute factors.
 *
 * Model quirks (Mistral, §2.3/§2.5): `originalLength` overrides L0, `betaFast`/`betaSlow` the YaRN-init ramp,
 * `slidingWindow: null` loads the model without its window (full attention; workers get the same flag).
 * The loader calls `validate` (validateSearchParams) so strategy/fitness params and `data` fail at `plan`.
 *
 * Two stage names, one implementation: `search` (input `model`; `second`/`readjust` then read the table
 * the model folder's config.json carries) and `search-factors` (inputs `model` and `factors`), because a
 * workflow must wire every input a stage declares.
 */
import { Context, Effect, Option, Schema } from "effect"
import { existsSync, mkdirSync, readFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { acquireRuntime, Gpu, GpuUnavailable } from "../kernels/device.ts"
import { InputError, inputError } from "../pipeline/errors.ts"
import { hashPath } from "../pipeline/workflow/hash.ts"
import { definePlugin, PluginRegistry, type Registry } from "../pipeline/workflow/plugin.ts"
import { defineStage, type Json, type ParamIssue, type StageContext, StageError, type ValidateContext } from "../pipeline/workflow/stage.ts"
import { writeFileAtomic } from "../pipeline/workflow/store.ts"
import { openCorpus } from "../plugins/data/corpus.ts"
import { type SyntheticTask, syntheticDocument } from "../plugins/data/synthetic.ts"
import { loadTokenizer, type TextTokenizer, byteTokenizer } from "../plugins/data/tokenizer.ts"
import { type InspectedLlama, inspectLlama, loadLlama } from "../plugins/models/llama/model.ts"
import { mscale, type MscalePolicy, ntkFactors, piFactors, rescaleFactors, type RopeGeometry, yarnFactors, yarnGetMscale, yarnInitFactors } from "../plugins/rope/factors.ts"
import { type FactorSetFile, factorSetFromHfLongrope, factorSetToScaling, formatFactorSetFile, parseFactorSetFile, ropeSpecFromConfig } from "../plugins/rope/formats.ts"
import { readResearch, type ResearchSet } from "../plugins/rope/longrope-research.ts"
import { resolveRope } from "../plugins/rope/index.ts"
import type { RopeSpec } from "../plugins/rope/types.ts"
import type { RopeTable } from "../kernels/rope-table.ts"
import { type CacheKeyParts, CandidateCache, candidateKey } from "../plugins/search/cache.ts"
import {
  absoluteFactors, type AnyFitness, applyPenalty, builtinFitness, type FitnessSample, genomeTable, getFitness, isFitnessPlugin,
  type FitnessPlugin, type LogprobModel, perplexity, resolveShortPenalty, type SampleSource, samplesHash, type ShortPenalty, type TableOptions,
} from "../plugins/search/fitness.ts"
import {
  type AnyStrategy, appendToLog, emptySearchLog, evolutionaryToLongRoPELog, formatFactorsCsv, getStrategy, halvingToLongRoPELog,
  type LongRoPELog, resultCsvName, type SearchLog, stringifyLongRoPELog,
} from "../plugins/search/index.ts"
import type { Candidate, Fidelity, Genome, Progress, Result, SearchContext } from "../plugins/search/types.ts"
import { geneRequested } from "../plugins/search/params.ts"

// ---- params ------------------------------------------------------------------------------------

const PosInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const Obj = Schema.Record(Schema.String, Schema.Unknown)

export const SearchParams = Schema.Struct({
  mode: Schema.optionalKey(Schema.Literals(["first", "second", "readjust"])),
  /** A strategy name (plugins/search or a plugin's `searchStrategies`); default "evolutionary". */
  strategy: Schema.optionalKey(Schema.String),
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
  data: Schema.optionalKey(Obj),
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
   * LongRoPE ran Mistral (issue #8: window set past the longest input). The llama plugin only has full
   * attention and otherwise refuses inputs longer than the window. Default: as config.json says.
   */
  slidingWindow: Schema.optionalKey(Schema.Null),
})
export type SearchParams = typeof SearchParams.Type

// ---- services ----------------------------------------------------------------------------------

/**
 * How the stage gets a model that scores tokens under a RoPE table. Default: the llama plugin on the
 * `Gpu` service (or on a device acquired for the step when none is provided). Provide this service to
 * evaluate elsewhere (workers, another model family, tests).
 */
export class SearchModelLoader extends Context.Service<
  SearchModelLoader,
  { readonly load: (dir: string) => Effect.Effect<LogprobModel & { readonly dispose?: () => void }, StageError> }
>()("ropeway/SearchModelLoader") {}

/**
 * One fitness evaluation as plain data (JSON-safe), so it can be done here or by a worker process
 * (pipeline/cluster): the model (path + content hash, checked where it is loaded), the samples by
 * content hash, the genome and how it becomes a table, the short-context penalty, the chunk size.
 * `fitness`: the fitness whose own `evaluate` scores a table; null for plain perplexity.
 */
export interface FitnessRequest {
  /** `fullAttention`: load it with its sliding window disabled (the stage's `slidingWindow: null`). */
  readonly model: { readonly path: string; readonly hash: string; readonly fullAttention?: boolean }
  readonly fitness: string | null
  readonly samples: string
  readonly genome: Genome
  readonly table: TableOptions
  readonly penalty: { readonly weight: number; readonly length: number; readonly samples: string } | null
  readonly chunk: number | null
}

export interface FitnessOutcome {
  readonly fitness: number
  /** Evaluation seconds (where it ran). */
  readonly seconds: number
}

/**
 * Where the stage's cache misses are evaluated. Default (service absent): on the step's model, one at a
 * time. Provide it to send them elsewhere (pipeline/cluster: workers through Postgres); then the stage
 * loads no model. `samples` holds every sample set a request names, by hash.
 */
export class SearchEvaluator extends Context.Service<
  SearchEvaluator,
  {
    /** How many evaluations of a batch may be in flight at once. */
    readonly concurrency: number | "unbounded"
    readonly evaluate: (request: FitnessRequest, samples: ReadonlyMap<string, readonly FitnessSample[]>) => Effect.Effect<FitnessOutcome, StageError>
  }
>()("ropeway/SearchEvaluator") {}

/** What evaluating requests on one loaded model remembers: the base model's short-context perplexities. */
export interface FitnessMemo {
  readonly base: Map<string, number>
}

/**
 * Scores a request on a loaded model: the one code path of the local evaluator and of the workers, so a
 * distributed search sees exactly the values a local one does. `evaluateWith` is the fitness' own
 * `evaluate` when the request names one; `baseTable` is the model's own RoPE (the penalty's baseline).
 */
export async function evaluateFitnessRequest(
  model: LogprobModel,
  req: FitnessRequest,
  samplesOf: (hash: string) => readonly FitnessSample[],
  evaluateWith: FitnessPlugin["evaluate"],
  baseTable: (length: number) => RopeTable,
  memo: FitnessMemo,
): Promise<number> {
  const chunk = req.chunk ?? undefined
  const on = (samples: readonly FitnessSample[], table: RopeTable): Promise<number> =>
    evaluateWith === undefined ? perplexity(model, samples, table, chunk) : evaluateWith(model, samples, table, chunk)
  const table = genomeTable(req.genome, req.table)
  let fitness = await on(samplesOf(req.samples), table)
  const p = req.penalty
  if (p !== null && Number.isFinite(fitness)) {
    const key = `${req.model.hash}|${req.fitness}|${p.samples}|${p.length}|${chunk}`
    let base = memo.base.get(key)
    if (base === undefined) {
      base = await on(samplesOf(p.samples), baseTable(p.length))
      memo.base.set(key, base)
    }
    fitness = applyPenalty(fitness, p.weight, await on(samplesOf(p.samples), table), base)
  }
  return fitness
}

/** The default evaluator: this step's model, one evaluation at a time, each uninterruptible (a GPU forward cannot be abandoned). */
function localEvaluator(model: LogprobModel, fitness: AnyFitness, baseTable: (length: number) => RopeTable): SearchEvaluator["Service"] {
  const memo: FitnessMemo = { base: new Map() }
  return {
    concurrency: 1,
    evaluate: (req, samples) =>
      Effect.tryPromise({
        try: async () => {
          const t0 = performance.now()
          const samplesOf = (h: string): readonly FitnessSample[] => {
            const s = samples.get(h)
            if (s === undefined) throw new Error(`no samples with hash ${h}`)
            return s
          }
          const value = await evaluateFitnessRequest(model, req, samplesOf, fitness.evaluate, baseTable, memo)
          return { fitness: value, seconds: (performance.now() - t0) / 1000 }
        },
        catch: (e) => asStageError(e, "evaluation"),
      }).pipe(Effect.uninterruptible),
  }
}

// ---- plugin lookups ----------------------------------------------------------------------------

const fail = (message: string, cause?: unknown): StageError => new StageError({ message, cause })

const asStageError = (e: unknown, what: string): StageError =>
  e instanceof StageError ? e : e instanceof InputError ? fail(e.message, e) : fail(`${what}: ${e instanceof Error ? e.message : String(e)}`, e)

function findStrategy(reg: Registry | undefined, name: string): AnyStrategy {
  const v = reg?.searchStrategies.get(name)?.value
  if (v !== undefined && typeof (v as unknown as AnyStrategy).propose === "function") return v as unknown as AnyStrategy
  return getStrategy(name)
}

function findFitness(reg: Registry | undefined, name: string): AnyFitness {
  const v = reg?.fitness.get(name)?.value
  if (v !== undefined) {
    if (!isFitnessPlugin(v)) throw inputError("search.fitness", `"${name}" is not a fitness plugin (it needs resolveParams and samples)`)
    return v
  }
  const b = getFitness(name)
  if (b === undefined) throw inputError("search.fitness", `unknown fitness "${name}"; known: ${[...new Set([...(reg?.names("fitness") ?? []), ...builtinFitness.map((f) => f.name)])].sort().join(", ")}`)
  return b
}

// ---- data --------------------------------------------------------------------------------------

interface DataSpec {
  /** "synthetic" or a corpus path. */
  readonly source: "synthetic" | { readonly path: string; readonly field: string | undefined }
  readonly seed: number
  readonly tasks: Partial<Record<SyntheticTask, number>> | undefined
  /** Synthetic filler: "varied", "paper" or "mixed" (default mixed). */
  readonly filler?: "varied" | "paper" | "mixed"
}

/** `data: {source: "synthetic", seed?, tasks?, filler?}` or `{source: "corpus", path, field?}` (as the evaluate stage). */
function resolveData(raw: Readonly<Record<string, unknown>> | undefined, seed: number): DataSpec {
  const o = raw ?? {}
  for (const k of Object.keys(o)) if (!["source", "path", "field", "seed", "tasks", "filler"].includes(k)) throw inputError(`search.data.${k}`, "unknown field; known: source, path, field, seed, tasks, filler")
  const s = o["seed"] ?? seed
  if (typeof s !== "number" || !Number.isSafeInteger(s)) throw inputError("search.data.seed", `expected an integer, got ${JSON.stringify(s)}`)
  const tasks = o["tasks"]
  if (tasks !== undefined && (typeof tasks !== "object" || tasks === null || Array.isArray(tasks))) throw inputError("search.data.tasks", `expected {passkey?, kv?, needle?, filler?} weights, got ${JSON.stringify(tasks)}`)
  const src = o["source"] ?? "synthetic"
  const filler = o["filler"]
  if (filler !== undefined && filler !== "varied" && filler !== "paper" && filler !== "mixed") throw inputError("search.data.filler", `expected "varied", "paper" or "mixed", got ${JSON.stringify(filler)}`)
  if (src === "synthetic") return { source: "synthetic", seed: s, tasks: tasks as DataSpec["tasks"], ...(filler === undefined ? {} : { filler }) }
  if (filler !== undefined) throw inputError("search.data.filler", 'applies to source "synthetic" only')
  if (src !== "corpus") throw inputError("search.data.source", `expected "synthetic" or "corpus", got ${JSON.stringify(src)}`)
  const path = o["path"]
  const field = o["field"]
  if (typeof path !== "string" || path === "") throw inputError("search.data.path", `expected the corpus path (a folder of .txt/.jsonl or one such file), got ${JSON.stringify(path)}`)
  if (field !== undefined && typeof field !== "string") throw inputError("search.data.field", `expected a string, got ${JSON.stringify(field)}`)
  return { source: { path: resolve(path), field }, seed: s, tasks: undefined }
}

function openTokenizer(spec: string | undefined, modelDir: string): TextTokenizer {
  if (spec !== undefined) return loadTokenizer(spec)
  return existsSync(join(modelDir, "tokenizer.json")) ? loadTokenizer(modelDir) : byteTokenizer()
}

/** Documents of `docLength` tokens (synthetic) or the corpus' documents with at least that many, in order. */
function sampleSource(d: DataSpec, tokenizer: TextTokenizer, docLength: number): SampleSource {
  const memo = new Map<string, readonly number[]>()
  if (d.source === "synthetic") {
    return {
      tokenizer,
      seed: d.seed,
      document: (i, minTokens, tasks) => {
        // Always the same length, so shorter fidelities score prefixes of the same documents.
        const length = Math.max(docLength, minTokens)
        const t = tasks ?? d.tasks
        const k = `${i}:${length}:${JSON.stringify(t ?? null)}`
        let ids = memo.get(k)
        if (ids === undefined) {
          ids = syntheticDocument({ tokenizer, seed: d.seed, length, ...(t === undefined ? {} : { tasks: t }), ...(d.filler === undefined ? {} : { filler: d.filler }) }, i).ids
          memo.set(k, ids)
        }
        return ids
      },
    }
  }
  const where = d.source.path
  const corpus = openCorpus(d.source.path, d.source.field === undefined ? {} : { field: d.source.field })
  const long: number[][] = []
  let scanned = 0
  return {
    tokenizer,
    seed: d.seed,
    document: (i, minTokens) => {
      const need = Math.max(docLength, minTokens)
      while (long.length <= i && scanned < corpus.size) {
        const ids = tokenizer.encode(corpus.text(scanned++))
        if (ids.length >= need) long.push(ids)
      }
      const doc = long[i]
      if (doc === undefined || doc.length < minTokens) throw inputError(where, `needs at least ${i + 1} documents of ≥ ${need} tokens; found ${long.length}`)
      return doc
    },
  }
}

// ---- one search --------------------------------------------------------------------------------

/** Everything one search needs besides the strategy. */
interface Job {
  /** Checkpoint file stem and log subfolder ("" for the only search). */
  readonly tag: string
  readonly sctx: SearchContext
  readonly strategyParams: Readonly<Record<string, unknown>>
  /** How a genome becomes a table (length = the target length, for m). */
  readonly table: TableOptions
}

interface Checkpoint {
  readonly format: 1
  readonly strategy: string
  readonly state: unknown
  readonly log: SearchLog
  /** Evaluation seconds so far (cache hits cost nothing). */
  readonly seconds: number
}

export interface SearchCounts {
  /** Evaluations run on the model by this stage run. */
  evaluated: number
  /** Candidates answered by the cache. */
  cached: number
}

interface Env {
  readonly ctx: StageContext<SearchParams, string, string>
  readonly evaluator: SearchEvaluator["Service"]
  readonly modelDir: string
  readonly modelHash: string
  /** Every sample set a request may name, by content hash. */
  readonly samples: Map<string, readonly FitnessSample[]>
  readonly fitness: AnyFitness
  readonly fitnessParams: unknown
  readonly fitnessKeyParams: unknown
  readonly penalty: ShortPenalty | null
  readonly source: SampleSource
  readonly geometry: RopeGeometry
  readonly cache: CandidateCache
  readonly chunk: number | undefined
  readonly counts: SearchCounts
}

function samplesFor(env: Env, memo: Map<string, { samples: FitnessSample[]; hash: string }>, f: Fidelity) {
  const k = `${f.samples}x${f.length}`
  let v = memo.get(k)
  if (v === undefined) {
    const samples = env.fitness.samples(env.source, env.fitnessParams, f)
    v = { samples, hash: samplesHash(samples) }
    memo.set(k, v)
    env.samples.set(v.hash, samples)
  }
  return v
}

/** The short-context penalty's samples (registered in env.samples), by hash. */
function penaltySamples(env: Env, memo: Map<string, string>): string {
  const p = env.penalty!
  const k = `${p.samples}x${p.length}`
  let hash = memo.get(k)
  if (hash === undefined) {
    const s = env.fitness.samples(env.source, env.fitnessParams, { samples: p.samples, length: p.length })
    hash = samplesHash(s)
    env.samples.set(hash, s)
    memo.set(k, hash)
  }
  return hash
}

function runSearch(env: Env, strategy: AnyStrategy, job: Job, onGeneration: (progress: Progress, state: unknown) => Effect.Effect<void>) {
  return Effect.gen(function* () {
    const file = join(env.ctx.checkpointDir, `${job.tag === "" ? "search" : `search-${job.tag}`}.json`)
    let cp: Checkpoint
    if (existsSync(file)) {
      cp = JSON.parse(readFileSync(file, "utf8")) as Checkpoint
      if (cp.strategy !== strategy.name) return yield* fail(`${file}: checkpoint of strategy "${cp.strategy}", this step runs "${strategy.name}"`)
      yield* env.ctx.progress.log(`search${job.tag === "" ? "" : ` ${job.tag}`}: resuming at generation ${strategy.progress(cp.state).generation}`)
    } else {
      const state = yield* Effect.try({ try: () => strategy.init(job.sctx, job.strategyParams), catch: (e) => asStageError(e, `strategy ${strategy.name}`) })
      cp = { format: 1, strategy: strategy.name, state, log: emptySearchLog(strategy.name), seconds: 0 }
    }
    const memo = new Map<string, { samples: FitnessSample[]; hash: string }>()
    const penaltyMemo = new Map<string, string>()

    const evaluate = (c: Candidate) =>
      Effect.gen(function* () {
        const prepared = yield* Effect.try({
          try: () => {
            const table = genomeTable(c.genome, job.table)
            const { hash } = samplesFor(env, memo, c.fidelity)
            const parts: CacheKeyParts = {
              model: env.modelHash,
              fitness: { name: env.fitness.name, version: env.fitness.version, params: env.fitnessKeyParams },
              samples: hash,
              fidelity: { samples: c.fidelity.samples, length: c.fidelity.length },
              rope: { factors: absoluteFactors(c.genome, job.table.baseFactors), startTokens: table.startTokens, attentionScale: table.attentionScale },
            }
            const hit = env.cache.get(candidateKey(parts))
            const penalty = hit !== undefined || env.penalty === null ? null : { weight: env.penalty.weight, length: env.penalty.length, samples: penaltySamples(env, penaltyMemo) }
            return { parts, hash, hit, penalty }
          },
          catch: (e) => asStageError(e, `evaluating candidate ${c.id}`),
        })
        if (prepared.hit !== undefined) {
          env.counts.cached++
          return { fitness: prepared.hit.fitness, seconds: 0 }
        }
        const request: FitnessRequest = {
          model: { path: env.modelDir, hash: env.modelHash, ...(env.ctx.params.slidingWindow === null ? { fullAttention: true } : {}) },
          fitness: env.fitness.evaluate === undefined ? null : env.fitness.name,
          samples: prepared.hash,
          genome: c.genome,
          table: job.table,
          penalty: prepared.penalty,
          chunk: env.chunk ?? null,
        }
        const r = yield* env.evaluator.evaluate(request, env.samples).pipe(Effect.mapError((e) => asStageError(e, `evaluating candidate ${c.id}`)))
        yield* Effect.try({ try: () => env.cache.put(prepared.parts, r.fitness, r.seconds), catch: (e) => asStageError(e, "search cache") })
        env.counts.evaluated++
        return r
      })

    while (!strategy.done(cp.state)) {
      const before = strategy.progress(cp.state).generation
      const { state, candidates } = yield* Effect.try({ try: () => strategy.propose(cp.state), catch: (e) => asStageError(e, `strategy ${strategy.name}`) })
      // The local evaluator takes one at a time; a cluster one has the whole batch in flight at once.
      const rs = yield* Effect.forEach(candidates, evaluate, { concurrency: env.evaluator.concurrency })
      let seconds = cp.seconds
      const results: Result[] = candidates.map((c, i) => {
        seconds += rs[i]!.seconds
        return { id: c.id, fitness: rs[i]!.fitness }
      })
      const next = yield* Effect.try({ try: () => strategy.observe(state, results), catch: (e) => asStageError(e, `strategy ${strategy.name}`) })
      const prog = strategy.progress(next)
      // no timings in the log: an artifact holds the same bytes for the same inputs (the step's result has the time)
      const log = prog.generation > before ? appendToLog(cp.log, prog) : cp.log
      // Continue from the JSON form, exactly what a resumed run would read back.
      const text = JSON.stringify({ format: 1, strategy: strategy.name, state: next, log, seconds } satisfies Checkpoint)
      writeFileAtomic(file, text)
      cp = JSON.parse(text) as Checkpoint
      if (prog.generation > before) yield* onGeneration(prog, next)
    }
    return cp
  })
}

// ---- outputs -----------------------------------------------------------------------------------

function longropeLog(strategy: AnyStrategy, state: unknown): LongRoPELog {
  const s = state as { strategy?: string }
  if (s.strategy === "evolutionary") return evolutionaryToLongRoPELog(state as Parameters<typeof evolutionaryToLongRoPELog>[0])
  if (s.strategy === "successive-halving") return halvingToLongRoPELog(state as Parameters<typeof halvingToLongRoPELog>[0])
  // A plugin's strategy: its population and best, factors only.
  const p = strategy.progress(state)
  const entry = (g: Genome, f: number): [number[], number] => [[...g.factors], f]
  return { iteration: Math.max(0, p.generation - 1), population: p.population.map((m) => entry(m.genome, m.fitness)), history: p.population.map((m) => entry(m.genome, m.fitness)) }
}

function writeLogs(dir: string, strategy: AnyStrategy, cp: Checkpoint, baseFactors: readonly number[] | undefined): void {
  mkdirSync(dir, { recursive: true })
  writeFileAtomic(join(dir, "search-log.json"), `${JSON.stringify(cp.log, null, 2)}\n`)
  writeFileAtomic(join(dir, "longrope-log.json"), `${stringifyLongRoPELog(longropeLog(strategy, cp.state))}\n`)
  for (const e of cp.log.entries) if (e.best !== null) writeFileAtomic(join(dir, resultCsvName(e.generation)), formatFactorsCsv(absoluteFactors(e.best.genome, baseFactors)))
  const best = strategy.best(cp.state)
  if (best !== undefined) writeFileAtomic(join(dir, resultCsvName("final")), formatFactorsCsv(absoluteFactors(best.genome, baseFactors)))
}

type SetEntry = FactorSetFile["sets"][number]

/** A searched set: absolute factors, m (a number when searched, else the policy), n̂. */
function searchedSet(maxLength: number, g: Genome, t: TableOptions): SetEntry {
  const out: SetEntry = { max_length: maxLength, factors: absoluteFactors(g, t.baseFactors), mscale: g.attentionScale ?? t.policy }
  const n = g.startToken ?? t.startTokens ?? 0
  return n === 0 ? out : { ...out, start_tokens: n }
}

/** A set read through longrope-research (ramps applied, policies resolved) back as a file entry. */
function entryOf(s: ResearchSet, L0: number): SetEntry {
  const factors = s.factors instanceof Float64Array ? Array.from(s.factors) : s.factors.map((r) => Array.from(r))
  const out: SetEntry = { max_length: s.maxLength, factors, mscale: s.mscale }
  const withScale = s.scale === s.maxLength / L0 ? out : { ...out, scale: s.scale }
  return s.startTokens === 0 ? withScale : { ...withScale, start_tokens: s.startTokens }
}

function vectorOf(s: ResearchSet, where: string): number[] {
  if (s.factors instanceof Float64Array) return Array.from(s.factors)
  const rows = s.factors
  const first = rows[0]!
  if (!rows.every((r) => r.every((x, i) => x === first[i]))) throw inputError(where, "per-layer factors that differ between layers are not supported by the search")
  return Array.from(first)
}

/**
 * The model as the search loads it: with `fullAttention`, its sliding window dropped from the config the
 * llama plugin reads (it has only full attention, and otherwise refuses inputs past the window). Used by
 * the stage and by cluster workers, so both score the same model.
 */
export function inspectForSearch(dir: string, fullAttention: boolean): InspectedLlama {
  const m = inspectLlama(dir)
  return fullAttention && m.config.slidingWindow !== undefined ? { ...m, config: { ...m.config, slidingWindow: undefined } } : m
}

/** `search.<a>.<b>: message` (the plugins' InputError form) as a path under `base` and the message. */
const issueOf = (e: unknown, prefix: RegExp, base: readonly string[]): ParamIssue => {
  const msg = e instanceof Error ? e.message : String(e)
  const m = prefix.exec(msg)
  return m === null ? { path: base, message: msg } : { path: [...base, ...m[1]!.split(".")], message: m[2]! }
}

/**
 * What the loader can check before the model is read: the strategy and fitness exist, their params (the
 * strategy's own validateParams; the fitness' resolveParams, which is pure), `data`, the lengths a mode needs.
 */
export function validateSearchParams(p: SearchParams, registry: Registry | undefined): ParamIssue[] {
  const issues: ParamIssue[] = []
  const mode = p.mode ?? "first"
  if (mode !== "readjust" && p.length === undefined) issues.push({ path: [], message: `missing key "length": the target length, required in mode "${mode}"` })
  if (mode === "readjust" && (p.lengths === undefined || p.lengths.length === 0)) issues.push({ path: [], message: 'missing key "lengths": the short lengths to readjust, required in mode "readjust"' })
  if (p.betaFast !== undefined && p.betaSlow !== undefined && !(p.betaFast > p.betaSlow)) {
    issues.push({ path: ["betaSlow"], message: `expected β_slow < β_fast (${p.betaFast}), got ${p.betaSlow}` })
  }
  let strategy: AnyStrategy | undefined
  try {
    strategy = findStrategy(registry, p.strategy ?? "evolutionary")
  } catch (e) {
    issues.push({ path: p.strategy === undefined ? [] : ["strategy"], message: e instanceof Error ? e.message : String(e) })
  }
  if (strategy?.validateParams !== undefined) {
    for (const i of strategy.validateParams(p.strategyParams ?? {})) issues.push({ ...i, path: ["strategyParams", ...i.path] })
  }
  let fitness: AnyFitness | undefined
  try {
    fitness = findFitness(registry, p.fitness ?? "ppl-truncate")
  } catch (e) {
    issues.push(issueOf(e, /^search\.(fitness): ([\s\S]*)$/, []))
  }
  const { shortPenalty, ...fp } = p.fitnessParams ?? {}
  const fitnessPrefix = /^search\.fitnessParams\.([^:\s]+): ([\s\S]*)$/
  if (fitness !== undefined) {
    try {
      fitness.resolveParams(fp)
    } catch (e) {
      issues.push(issueOf(e, fitnessPrefix, ["fitnessParams"]))
    }
  }
  try {
    // L0 is not known yet; only the shape is checked here (the default length is L0's).
    resolveShortPenalty(shortPenalty, 2, p.samples ?? 5)
  } catch (e) {
    issues.push(issueOf(e, fitnessPrefix, ["fitnessParams"]))
  }
  try {
    resolveData(p.data, 0)
  } catch (e) {
    issues.push(issueOf(e, /^search\.data\.([^:\s]+): ([\s\S]*)$/, ["data"]))
  }
  return issues
}

// ---- the stage ---------------------------------------------------------------------------------

// 2: mode second also seeds λ_rel = 1 (a store made by 1 would reuse second searches that never tried it)
export const SEARCH_VERSION = "2"

const stageDef = {
  version: SEARCH_VERSION,
  params: SearchParams,
  run: (ctx: StageContext<SearchParams, string, string>) => runSearchStage(ctx),
  validate: (p: SearchParams, ctx: ValidateContext) => validateSearchParams(p, ctx.registry),
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

// `search` has no `factors` input and `first` ignores it: read inputs by name, defensively.
const inputPath = (ctx: StageContext<SearchParams, string, string>, name: string): string | undefined => (ctx.inputs as Record<string, string | undefined>)[name]

export function runSearchStage(ctx: StageContext<SearchParams, string, string>) {
  return Effect.gen(function* () {
    const p = ctx.params
    const out = ctx.outputs as unknown as { readonly factors: string; readonly log: string }
    const mode = p.mode ?? "first"
    const registry = Option.getOrUndefined(yield* Effect.serviceOption(PluginRegistry))
    const modelDir = inputPath(ctx, "model")
    if (modelDir === undefined) return yield* fail("search: input `model` (a Hugging Face model folder) is required")

    const setup = yield* Effect.try({
      try: () => {
        const configFile = join(modelDir, "config.json")
        const spec = ropeSpecFromConfig(JSON.parse(readFileSync(configFile, "utf8")), configFile)
        const L0model = p.originalLength ?? spec.originalMaxPositions ?? spec.maxPositions
        const strategy = findStrategy(registry, p.strategy ?? "evolutionary")
        const fitness = findFitness(registry, p.fitness ?? "ppl-truncate")
        const { shortPenalty, ...fp } = p.fitnessParams ?? {}
        const fitnessParams = fitness.resolveParams(fp)
        const samples = p.samples ?? 5
        let inputSets: { research: ReturnType<typeof readResearch>; L0: number; path: string } | undefined
        if (mode !== "first") {
          const path = inputPath(ctx, "factors")
          if (path !== undefined) {
            const file = parseFactorSetFile(readFileSync(path, "utf8"), path)
            if (file.model.rotary_dim !== spec.rotaryDim || file.model.base !== spec.base) {
              throw inputError(path, `factor set is for rotary_dim ${file.model.rotary_dim}, base ${file.model.base}; the model has ${spec.rotaryDim}, ${spec.base}`)
            }
            inputSets = { research: readResearch({ ...spec, scaling: factorSetToScaling(file), scalingKey: path }), L0: file.model.original_max_position_embeddings, path }
          } else {
            // No `factors` input: the table the model folder carries (longrope-research, or HF longrope's two sets).
            const type = spec.scaling?.["rope_type"] ?? spec.scaling?.["type"]
            let research: ReturnType<typeof readResearch>
            if (type === "longrope-research") research = readResearch(spec)
            else if (type === "longrope" || type === "su") {
              const f = factorSetFromHfLongrope(spec, { run_id: null, lengths: [spec.maxPositions], scale: 1, created: "" })
              research = readResearch({ ...spec, scaling: factorSetToScaling(f) })
            } else throw inputError(configFile, `mode "${mode}" needs the model's factor set: wire a \`factors\` input (stage search-factors) or use a model whose rope_scaling is longrope-research or longrope`)
            inputSets = { research, L0: research.originalLength, path: configFile }
          }
        }
        if (inputSets !== undefined && p.originalLength !== undefined && p.originalLength !== inputSets.L0) {
          throw inputError("search.originalLength", `${p.originalLength} differs from the factor set's L0 ${inputSets.L0} (${inputSets.path}); in mode "${mode}" L0 comes from the factor set`)
        }
        const L0 = inputSets?.L0 ?? L0model
        const penalty = resolveShortPenalty(shortPenalty, L0, samples)
        return { spec, L0, strategy, fitness, fitnessParams, fitnessKeyParams: { ...fitnessParams as object, shortPenalty: penalty }, penalty, samples, inputSets }
      },
      catch: (e) => asStageError(e, "search"),
    })
    const { spec, L0, strategy, samples, inputSets } = setup
    const geometry: RopeGeometry = { rotaryDim: spec.rotaryDim, base: spec.base, originalLength: L0 }
    const policyParam: MscalePolicy | undefined = p.mscale
    const fidelities = p.fidelities?.map((f) => ({ samples: f.samples, length: f.length }))
    const yarn = { ...(p.betaFast === undefined ? {} : { betaFast: p.betaFast }), ...(p.betaSlow === undefined ? {} : { betaSlow: p.betaSlow }) }

    // The jobs of this mode, and how the result becomes the factor-set file.
    const jobs: Job[] = []
    let finish: (best: readonly Genome[]) => { sets: SetEntry[]; lengths: number[]; scale: number }
    const seedOf = (k: number) => ctx.seed + k
    type InitVector = ArrayLike<number> | { readonly factors: ArrayLike<number>; readonly attentionScale: number }
    const mkCtx = (dims: number, scale: number, length: number, init: readonly InitVector[], seed: number): SearchContext => ({
      dims,
      scale,
      fidelity: { samples, length },
      ...(fidelities === undefined ? {} : { fidelities }),
      init: init.map((f) => ("attentionScale" in f ? { factors: Array.from(f.factors), attentionScale: f.attentionScale } : { factors: Array.from(f) })),
      seed,
    })
    /** n̂ / m init values for strategies that search those genes (the set's n̂, the policy's m). */
    const withGeneDefaults = (t: TableOptions): Record<string, unknown> => {
      const sp: Record<string, unknown> = { ...(p.strategyParams ?? {}) }
      if (geneRequested(sp, "attentionScale") && sp["initAttentionScale"] === undefined) sp["initAttentionScale"] = mscale(t.policy, t.length / L0, L0)
      if (geneRequested(sp, "startToken") && sp["initStartToken"] === undefined && (t.startTokens ?? 0) > 0) sp["initStartToken"] = t.startTokens
      return sp
    }
    const dims = spec.rotaryDim / 2
    const need = (v: number | undefined, what: string): number => {
      if (v === undefined) throw inputError(`search.${what}`, `required in mode "${mode}"`)
      return v
    }

    const plan = yield* Effect.try({
      try: () => {
        if (mode === "first") {
          const L = need(p.length, "length")
          const s = L / L0
          const table: TableOptions = { geometry, length: L, policy: policyParam ?? "su", startTokens: 0 }
          const strategyParams = withGeneDefaults(table)
          // HF YaRN itself (harmonic ramp), with its own 0.1·ln s + 1 when m is a gene: the strongest
          // untrained baseline is then in generation 0, so the search can only end at or below it.
          const hfYarn = yarnFactors(geometry, s, yarn)
          const mGene = geneRequested(strategyParams, "attentionScale")
          const init: InitVector[] = [piFactors(geometry, s), ntkFactors(geometry, s), yarnInitFactors(geometry, s, yarn), mGene ? { factors: hfYarn, attentionScale: yarnGetMscale(s) } : hfYarn]
          jobs.push({ tag: "", table, strategyParams, sctx: mkCtx(dims, s, L, init, seedOf(0)) })
          finish = ([best]) => ({
            sets: L > L0 ? [{ max_length: L0, factors: new Array<number>(dims).fill(1) }, searchedSet(L, best!, table)] : [searchedSet(L, best!, table)],
            lengths: [L],
            scale: s,
          })
        } else if (mode === "second") {
          const L = need(p.length, "length")
          const sets = inputSets!.research.sets
          const ft = sets[sets.length - 1]!
          if (!(L > ft.maxLength)) throw inputError("search.length", `expected more than the fine-tuned length ${ft.maxLength} (the last set of ${inputSets!.path}), got ${L}`)
          const lambdaFt = vectorOf(ft, inputSets!.path)
          const sRel = L / ft.maxLength
          // YaRN-init at the relative scale, with the fine-tuned length as the "original" one.
          const relInit = yarnInitFactors({ ...geometry, originalLength: ft.maxLength }, sRel, yarn)
          const table: TableOptions = { geometry, length: L, policy: policyParam ?? ft.mscale, startTokens: ft.startTokens, baseFactors: lambdaFt }
          // λ_rel = 1 too: the fine-tuned set as it is, which wins when the fine-tune already trained positions up
          // to L (position skips, finetune positionSkip) and further interpolation only blurs them.
          const keep = new Float64Array(dims).fill(1)
          jobs.push({ tag: "", table, strategyParams: withGeneDefaults(table), sctx: mkCtx(dims, sRel, L, [relInit, keep], seedOf(0)) })
          finish = ([best]) => ({ sets: [...sets.map((x) => entryOf(x, L0)), searchedSet(L, best!, table)], lengths: [L], scale: L / L0 })
        } else {
          const lengths = [...(p.lengths ?? [])].sort((a, b) => a - b)
          if (lengths.length === 0) throw inputError("search.lengths", 'required in mode "readjust": the short lengths to readjust (e.g. [4096, 8192])')
          if (new Set(lengths).size !== lengths.length) throw inputError("search.lengths", `expected distinct lengths, got ${JSON.stringify(p.lengths)}`)
          const sets = inputSets!.research.sets
          const top = lengths[lengths.length - 1]!
          if (!(top < sets[sets.length - 1]!.maxLength)) throw inputError("search.lengths", `expected lengths below the model's longest set (${sets[sets.length - 1]!.maxLength}), got ${top}`)
          const tables: TableOptions[] = []
          lengths.forEach((Ls, k) => {
            const serving = sets.find((x) => Ls <= x.maxLength)!
            const lam: Float64Array = Float64Array.from(vectorOf(serving, inputSets!.path))
            const s = Math.max(Ls / L0, 1)
            const init: ArrayLike<number>[] = [lam]
            if (serving.scale > 1 && s !== serving.scale) init.push(rescaleFactors(lam, serving.scale, s))
            if (s > 1) init.push(yarnInitFactors(geometry, s, yarn), piFactors(geometry, s), ntkFactors(geometry, s))
            else init.push(new Float64Array(dims).fill(1))
            const table: TableOptions = { geometry, length: Ls, policy: policyParam ?? serving.mscale, startTokens: serving.startTokens }
            tables.push(table)
            jobs.push({ tag: String(Ls), table, strategyParams: withGeneDefaults(table), sctx: mkCtx(dims, s, Ls, init, seedOf(k)) })
          })
          finish = (bests) => ({
            sets: [...lengths.map((Ls, k) => searchedSet(Ls, bests[k]!, tables[k]!)), ...sets.filter((x) => x.maxLength > top).map((x) => entryOf(x, L0))],
            lengths,
            scale: top / L0,
          })
        }
        return { finish }
      },
      catch: (e) => asStageError(e, "search"),
    })

    // The evaluator: a provided one (workers) needs no model here; else the step's model.
    const provided = Option.getOrUndefined(yield* Effect.serviceOption(SearchEvaluator))
    const evaluator =
      provided ??
      (yield* Effect.gen(function* () {
        const loader = Option.getOrUndefined(yield* Effect.serviceOption(SearchModelLoader))
        const model = yield* Effect.acquireRelease(
          loader !== undefined
            ? loader.load(modelDir)
            : Effect.gen(function* () {
                // The run's shared device when the runner provides one, else one for this step.
                const shared = Option.getOrUndefined(yield* Effect.serviceOption(Gpu))
                const rt =
                  shared ??
                  (yield* Effect.acquireRelease(
                    Effect.tryPromise({ try: () => acquireRuntime(), catch: (e) => fail(e instanceof GpuUnavailable ? e.message : `no GPU: ${String(e)}`, e) }),
                    (r) => Effect.sync(() => r.destroy()),
                  ))
                return yield* Effect.tryPromise({ try: () => loadLlama(rt, inspectForSearch(modelDir, p.slidingWindow === null)), catch: (e) => asStageError(e, `loading ${modelDir}`) })
              }),
          (m) => Effect.sync(() => m.dispose?.()),
        )
        const baseRope = yield* Effect.try({
          try: () => resolveRopeLazy(ropeSpecFromConfig(JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")))),
          catch: (e) => asStageError(e, "search"),
        })
        return localEvaluator(model, setup.fitness, baseRope)
      }))
    const env = yield* Effect.try({
      try: (): Env => {
        const data = resolveData(p.data, ctx.seed)
        const tokenizer = openTokenizer(p.tokenizer, modelDir)
        const vocab = (JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as { vocab_size?: number }).vocab_size ?? Infinity
        if (tokenizer.vocabSize > vocab) throw inputError("search.tokenizer", `tokenizer ${tokenizer.name} has ${tokenizer.vocabSize} ids but the model's vocab_size is ${vocab}`)
        const maxLen = Math.max(...jobs.map((j) => j.sctx.fidelity.length), setup.penalty?.length ?? 0)
        return {
          ctx,
          evaluator,
          modelDir: resolve(modelDir),
          modelHash: hashPath(modelDir),
          samples: new Map(),
          fitness: setup.fitness,
          fitnessParams: setup.fitnessParams,
          fitnessKeyParams: setup.fitnessKeyParams,
          penalty: setup.penalty,
          source: sampleSource(data, tokenizer, maxLen),
          geometry,
          cache: new CandidateCache(p.cacheDir ?? resolve(dirname(ctx.checkpointDir), "..", "_search-cache")),
          chunk: p.chunk,
          counts: { evaluated: 0, cached: 0 },
        }
      },
      catch: (e) => asStageError(e, "search"),
    })

    const t0 = performance.now()
    const results: Checkpoint[] = []
    for (let k = 0; k < jobs.length; k++) {
      const job = jobs[k]!
      const started = { at: performance.now(), frac: -1 }
      const cp = yield* runSearch(env, strategy, job, (prog, state) =>
        Effect.suspend(() => {
          // Done share: generations when the strategy plans them, else its full-evaluation budget.
          const budget = (state as { params?: { maxFullEvaluations?: unknown } }).params?.maxFullEvaluations
          const frac =
            prog.generations !== undefined ? Math.min(1, prog.generation / prog.generations) : typeof budget === "number" ? Math.min(1, prog.fullEvaluations / budget) : 0
          if (started.frac < 0) started.frac = frac - (prog.generations !== undefined ? 1 / prog.generations : 0)
          const rate = (frac - started.frac) / ((performance.now() - started.at) / 1000)
          const eta = rate > 0 && frac > 0 ? `, ETA ${Math.round((1 - frac) / rate)}s` : ""
          const where = jobs.length > 1 ? `length ${job.tag}: ` : ""
          const gen = `generation ${prog.generation}${prog.generations === undefined ? "" : `/${prog.generations}`}`
          const best = prog.best === undefined ? "-" : prog.best.fitness.toPrecision(6)
          return ctx.progress.report((k + frac) / jobs.length, `${where}${gen}, ${env.counts.evaluated} evaluated + ${env.counts.cached} cached, best ${best}${eta}`)
        }),
      )
      results.push(cp)
    }

    // Outputs.
    const bests = yield* Effect.try({
      try: () =>
        results.map((cp, k) => {
          const b = strategy.best(cp.state)
          if (b === undefined) throw new Error(`search${jobs[k]!.tag === "" ? "" : ` at ${jobs[k]!.tag}`} ended with no evaluated candidate`)
          return b
        }),
      catch: (e) => asStageError(e, "search"),
    })
    yield* Effect.try({
      try: () => {
        const { sets, lengths, scale } = plan.finish(bests.map((b) => b.genome))
        const file: FactorSetFile = {
          format: "ropeway-factor-set",
          version: 1,
          model: { rotary_dim: spec.rotaryDim, base: spec.base, original_max_position_embeddings: L0, num_hidden_layers: spec.numLayers },
          sets,
          provenance: {
            method: "search",
            run_id: ctx.key,
            lengths,
            scale,
            source: `${mode} search, strategy ${strategy.name}, fitness ${setup.fitness.name}, step ${ctx.step}`,
            notes: `best fitness ${bests.map((b) => b.fitness).join(", ")}${mode === "second" ? "; factors are λ_rel ⊙ λ_ft" : ""}`,
          },
        }
        // Validate what we write with the same reader every consumer uses.
        writeFileAtomic(out.factors, formatFactorSetFile(parseFactorSetFile(formatFactorSetFile(file), "search output")))
        jobs.forEach((job, k) => writeLogs(job.tag === "" ? out.log : join(out.log, job.tag), strategy, results[k]!, job.table.baseFactors))
      },
      catch: (e) => asStageError(e, "search: writing outputs"),
    })
    const result: Json = {
      mode,
      strategy: strategy.name,
      fitness: setup.fitness.name,
      best: bests.map((b) => b.fitness),
      evaluations: results.map((cp) => strategy.progress(cp.state).evaluations),
      evaluated: env.counts.evaluated,
      cached: env.counts.cached,
      seconds: (performance.now() - t0) / 1000,
      genome: bests.map((b) => encodeGenomeLoose(b.genome)),
    }
    return result
  }).pipe(Effect.scoped)
}

const encodeGenomeLoose = (g: Genome): Json => {
  const out: { [k: string]: Json } = { factors: [...g.factors] }
  if (g.startToken !== undefined) out["startToken"] = g.startToken
  if (g.attentionScale !== undefined) out["attentionScale"] = g.attentionScale
  if (g.alpha !== undefined) out["alpha"] = g.alpha
  if (g.beta !== undefined) out["beta"] = g.beta
  return out
}

/** The model's own RoPE (for the penalty's base), resolved on first use so a bad config fails only if needed. */
function resolveRopeLazy(spec: RopeSpec): (length: number) => RopeTable {
  let at: ((length: number) => RopeTable) | undefined
  return (length) => {
    at ??= resolveRope(spec)
    return at(length)
  }
}

/** The built-in search plugin: the stage and the fitness functions (strategies live in plugins/search). */
export const searchPlugin = definePlugin({
  name: "ropeway-search",
  version: "0.1.0",
  description: "LongRoPE's search stage and its fitness functions",
  stages: [searchStage, searchFactorsStage],
  fitness: builtinFitness,
})
