/**
 * One search, driven to the end: the strategy proposes, every candidate goes through the on-disk candidate
 * cache (cache.ts) and, on a miss, the SearchEvaluator (evaluator.ts); the strategy state, the log and the
 * timing go atomically into the checkpoint folder after every batch, so a restarted step continues from
 * there and sees exactly the values the uninterrupted one saw. Interruption lands between evaluations.
 * Then the logs: search-log.json (ours), longrope-log.json (LongRoPE's) and result_*.csv (absolute factors).
 */
import { Effect } from "effect"
import { existsSync, mkdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { asStageError, attempt, fail, type RopewayError } from "../../common/errors.ts"
import { writeFileAtomic } from "../../common/files.ts"
import type { StageProgress } from "../../pipeline/workflow/stage.ts"
import type { RopeGeometry } from "../rope/factors.ts"
import { type CacheKeyParts, CandidateCache, candidateKey } from "./cache.ts"
import type { FitnessRequest, SearchEvaluator } from "./evaluator.ts"
import { absoluteFactors, type AnyFitness, type FitnessSample, genomeTable, type SampleSource, samplesHash, type ShortPenalty } from "./fitness.ts"
import type { AnyStrategy } from "./index.ts"
import { appendToLog, emptySearchLog, evolutionaryToLongRoPELog, formatFactorsCsv, halvingToLongRoPELog, type LongRoPELog, resultCsvName, type SearchLog, stringifyLongRoPELog } from "./log.ts"
import type { Job } from "./modes.ts"
import type { Candidate, Fidelity, Genome, Progress, Result } from "./types.ts"

export interface SearchCheckpoint {
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

export interface Env {
  /** Where the strategy state goes after every batch; how progress is shown. */
  readonly checkpointDir: string
  readonly progress: StageProgress
  /** The step's `slidingWindow: null`: workers load the model with full attention too. */
  readonly fullAttention: boolean
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

export function runSearch(env: Env, strategy: AnyStrategy, job: Job, onGeneration: (progress: Progress, state: unknown) => Effect.Effect<void>) {
  return Effect.gen(function* () {
    const file = join(env.checkpointDir, `${job.tag === "" ? "search" : `search-${job.tag}`}.json`)
    let cp: SearchCheckpoint
    if (existsSync(file)) {
      cp = JSON.parse(readFileSync(file, "utf8")) as SearchCheckpoint
      if (cp.strategy !== strategy.name) return yield* fail(`${file}: checkpoint of strategy "${cp.strategy}", this step runs "${strategy.name}"`)
      yield* env.progress.log(`search${job.tag === "" ? "" : ` ${job.tag}`}: resuming at generation ${strategy.progress(cp.state).generation}`)
    } else {
      const state = yield* attempt(`strategy ${strategy.name}`, () => strategy.init(job.sctx, job.strategyParams))
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
          model: { path: env.modelDir, hash: env.modelHash, ...(env.fullAttention ? { fullAttention: true } : {}) },
          fitness: env.fitness.evaluate === undefined ? null : env.fitness.name,
          samples: prepared.hash,
          genome: c.genome,
          table: job.table,
          penalty: prepared.penalty,
          chunk: env.chunk ?? null,
        }
        const r = yield* env.evaluator.evaluate(request, env.samples).pipe(Effect.mapError((e) => asStageError(e, `evaluating candidate ${c.id}`)))
        yield* attempt("search cache", () => env.cache.put(prepared.parts, r.fitness, r.seconds))
        env.counts.evaluated++
        return r
      })

    while (!strategy.done(cp.state)) {
      const before = strategy.progress(cp.state).generation
      const { state, candidates } = yield* attempt(`strategy ${strategy.name}`, () => strategy.propose(cp.state))
      // The local evaluator takes one at a time; a cluster one has the whole batch in flight at once.
      const rs = yield* Effect.forEach(candidates, evaluate, { concurrency: env.evaluator.concurrency })
      let seconds = cp.seconds
      const results: Result[] = candidates.map((c, i) => {
        seconds += rs[i]!.seconds
        return { id: c.id, fitness: rs[i]!.fitness }
      })
      const next = yield* attempt(`strategy ${strategy.name}`, () => strategy.observe(state, results))
      const prog = strategy.progress(next)
      // no timings in the log: an artifact holds the same bytes for the same inputs (the step's result has the time)
      const log = prog.generation > before ? appendToLog(cp.log, prog) : cp.log
      // Continue from the JSON form, exactly what a resumed run would read back.
      const text = JSON.stringify({ format: 1, strategy: strategy.name, state: next, log, seconds } satisfies SearchCheckpoint)
      writeFileAtomic(file, text)
      cp = JSON.parse(text) as SearchCheckpoint
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

export function writeLogs(dir: string, strategy: AnyStrategy, cp: SearchCheckpoint, baseFactors: readonly number[] | undefined): void {
  mkdirSync(dir, { recursive: true })
  writeFileAtomic(join(dir, "search-log.json"), `${JSON.stringify(cp.log, null, 2)}\n`)
  writeFileAtomic(join(dir, "longrope-log.json"), `${stringifyLongRoPELog(longropeLog(strategy, cp.state))}\n`)
  for (const e of cp.log.entries) if (e.best !== null) writeFileAtomic(join(dir, resultCsvName(e.generation)), formatFactorsCsv(absoluteFactors(e.best.genome, baseFactors)))
  const best = strategy.best(cp.state)
  if (best !== undefined) writeFileAtomic(join(dir, resultCsvName("final")), formatFactorsCsv(absoluteFactors(best.genome, baseFactors)))
}

/** "generation g/G, n evaluated + m cached, best f, ETA s" for job k of `jobs`, and its share of the step. */
function progressNote(env: Env, jobs: readonly Job[], k: number) {
  const started = { at: performance.now(), frac: -1 }
  return (prog: Progress, state: unknown): Effect.Effect<void> =>
    Effect.suspend(() => {
      // Done share: generations when the strategy plans them, else its full-evaluation budget.
      const budget = (state as { params?: { maxFullEvaluations?: unknown } }).params?.maxFullEvaluations
      const frac = prog.generations !== undefined ? Math.min(1, prog.generation / prog.generations) : typeof budget === "number" ? Math.min(1, prog.fullEvaluations / budget) : 0
      if (started.frac < 0) started.frac = frac - (prog.generations !== undefined ? 1 / prog.generations : 0)
      const rate = (frac - started.frac) / ((performance.now() - started.at) / 1000)
      const eta = rate > 0 && frac > 0 ? `, ETA ${Math.round((1 - frac) / rate)}s` : ""
      const where = jobs.length > 1 ? `length ${jobs[k]!.tag}: ` : ""
      const gen = `generation ${prog.generation}${prog.generations === undefined ? "" : `/${prog.generations}`}`
      const best = prog.best === undefined ? "-" : prog.best.fitness.toPrecision(6)
      return env.progress.report((k + frac) / jobs.length, `${where}${gen}, ${env.counts.evaluated} evaluated + ${env.counts.cached} cached, best ${best}${eta}`)
    })
}

/** Every job in turn, to the end; each job's final checkpoint and its best (failing when a job evaluated nothing). */
export function runJobs(env: Env, strategy: AnyStrategy, jobs: readonly Job[]) {
  return Effect.gen(function* () {
    const results: SearchCheckpoint[] = []
    for (let k = 0; k < jobs.length; k++) results.push(yield* runSearch(env, strategy, jobs[k]!, progressNote(env, jobs, k)))
    const bests = yield* attempt("search", () =>
      results.map((cp, k) => {
        const b = strategy.best(cp.state)
        if (b === undefined) throw new Error(`search${jobs[k]!.tag === "" ? "" : ` at ${jobs[k]!.tag}`} ended with no evaluated candidate`)
        return b
      }))
    return { results, bests }
  })
}
