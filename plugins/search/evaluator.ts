/**
 * Where a search's fitness evaluations run. Each cache miss becomes a FitnessRequest (plain data) for the
 * SearchEvaluator service: absent, the step's own model scores it (one at a time, `localEvaluator`);
 * provided (the cluster plugin, a workflow's `cluster:`), workers score a whole batch at once. Both run
 * `evaluateFitnessRequest`, so the values agree.
 */
import { Context, Effect } from "effect"
import { asStageError, type RopewayError } from "../../common/errors.ts"
import type { RopeTable } from "../../kernels/rope-table.ts"
import { type AnyFitness, applyPenalty, type FitnessPlugin, type FitnessSample, genomeTable, type LogprobModel, perplexity, type TableOptions } from "./fitness.ts"
import type { Genome } from "./types.ts"

/**
 * One fitness evaluation as plain data (JSON-safe), so it can be done here or by a worker process
 * (cluster): the model (path + content hash, checked where it is loaded), the samples by
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
 * time. Provide it to send them elsewhere (cluster/: workers through Postgres); then the stage
 * loads no model. `samples` holds every sample set a request names, by hash.
 */
export class SearchEvaluator extends Context.Service<
  SearchEvaluator,
  {
    /** How many evaluations of a batch may be in flight at once. */
    readonly concurrency: number | "unbounded"
    readonly evaluate: (request: FitnessRequest, samples: ReadonlyMap<string, readonly FitnessSample[]>) => Effect.Effect<FitnessOutcome, RopewayError>
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
export function localEvaluator(model: LogprobModel, fitness: AnyFitness, baseTable: (length: number) => RopeTable): SearchEvaluator["Service"] {
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
