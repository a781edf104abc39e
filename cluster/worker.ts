/**
 * A worker: an effect/cluster runner that owns a share of the shards of `FitnessEvaluation` and
 * evaluates the requests addressed to them on its own GPU. It loads the model a request names (the
 * same path must hold the same files on every machine: the content hash is checked) through the model
 * families it was given (the built-ins and any `--plugin`), and keeps the last one loaded; evaluations run
 * one at a time (one GPU). The scoring is plugins/search/evaluator.ts' evaluateFitnessRequest, the code a
 * local search runs, so the values are the same.
 */
import { NodeClusterSocket } from "@effect/platform-node"
import { Effect, Layer, Option, Semaphore } from "effect"
import { RunnerAddress } from "effect/cluster"
import { SqlClient } from "effect/sql"
import type { RopeTable } from "../kernels/rope-table.ts"
import { Gpu } from "../kernels/device.ts"
import type { LoadedModel, ModelFamily } from "../plugins/models/family.ts"
import { checkFits, inspectModel } from "../plugins/models/registry.ts"
import { resolveRope } from "../plugins/rope/index.ts"
import { evaluateFitnessRequest, type FitnessMemo, type FitnessRequest } from "../plugins/search/evaluator.ts"
import { type FitnessSample, getFitness } from "../plugins/search/fitness.ts"
import { hashPath } from "../common/hash.ts"
import { EvaluationFailed, FitnessEvaluation } from "./protocol.ts"
import { SamplesStore, storeLayer } from "./store.ts"

export interface WorkerOptions {
  readonly store: string
  /** Where other runners and coordinators reach this one. */
  readonly address: { readonly host: string; readonly port: number }
  /** Where to listen, when not `address` (e.g. 0.0.0.0 behind NAT). */
  readonly listen?: { readonly host: string; readonly port: number }
  /** Names this worker in replies and logs. */
  readonly id: string
  /** The model families it reads folders with (the built-ins, and any `--plugin`'s). */
  readonly families: readonly ModelFamily[]
  /** Called when a model is loaded and after each evaluation (the CLI prints the lines). */
  readonly log?: (line: string) => void
}

interface Loaded {
  readonly path: string
  readonly hash: string
  readonly fullAttention: boolean
  readonly model: LoadedModel
  readonly baseTable: (length: number) => RopeTable
  readonly memo: FitnessMemo
}

const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/**
 * The handlers, built once per worker. (An entity's own build effect runs once per entity instance,
 * here once per request: the model, its cache and the GPU lock must not live there.)
 */
const handlers = (o: WorkerOptions) =>
  Effect.gen(function* () {
    const gpu = yield* Gpu
    const store = new SamplesStore(yield* SqlClient.SqlClient)
    // One GPU: one evaluation at a time, whatever the number of entities with work.
    const gpuLock = yield* Semaphore.make(1)
    const hashes = new Map<string, string>()
    let loaded: Loaded | undefined
    yield* Effect.addFinalizer(() => Effect.sync(() => loaded?.model.dispose()))

    const failed = (message: string) => new EvaluationFailed({ message, worker: o.id })

    const modelFor = (req: FitnessRequest) =>
      Effect.tryPromise({
        try: async (): Promise<Loaded> => {
          const { path, hash } = req.model
          const fullAttention = req.model.fullAttention === true
          if (loaded !== undefined && loaded.path === path && loaded.hash === hash && loaded.fullAttention === fullAttention) return loaded
          // Hashing a large model takes a while: once per path, again only when it no longer matches.
          let h = hashes.get(path)
          if (h !== hash) {
            h = hashPath(path)
            hashes.set(path, h)
          }
          if (h !== hash) throw new Error(`${path} on ${o.id} has hash ${h}, the coordinator's has ${hash}`)
          loaded?.model.dispose()
          loaded = undefined
          const { family, model: inspected } = inspectModel(o.families, path, fullAttention ? { fullAttention } : {})
          checkFits(family, inspected, Math.max(req.table.length, req.penalty?.length ?? 0), gpu.limits)
          const model = await family.load(gpu, inspected)
          o.log?.(`loaded model ${path}`)
          let base: ((length: number) => RopeTable) | undefined
          loaded = { path, hash, fullAttention, model, baseTable: (length) => (base ??= resolveRope(model.config.rope))(length), memo: { base: new Map() } }
          return loaded
        },
        catch: (e) => failed(`loading model: ${errorText(e)}`),
      })

    const evaluate = (req: FitnessRequest) =>
      Effect.gen(function* () {
        const evaluateWith = req.fitness === null ? undefined : getFitness(req.fitness)?.evaluate
        if (req.fitness !== null && evaluateWith === undefined) return yield* failed(`fitness "${req.fitness}" has no evaluate known to this worker (only built-in fitness functions run on workers)`)
        const samples = new Map<string, readonly FitnessSample[]>()
        for (const h of req.penalty === null ? [req.samples] : [req.samples, req.penalty.samples]) {
          samples.set(h, yield* store.get(h).pipe(Effect.mapError((e) => failed(`samples: ${errorText(e)}`))))
        }
        const m = yield* modelFor(req)
        const t0 = performance.now()
        const fitness = yield* Effect.tryPromise({
          try: () => evaluateFitnessRequest(m.model, req, (h) => samples.get(h)!, evaluateWith, m.baseTable, m.memo),
          catch: (e) => failed(`evaluation: ${errorText(e)}`),
        })
        const seconds = (performance.now() - t0) / 1000
        o.log?.(`evaluated λ=[${req.genome.factors.map((x) => x.toPrecision(4)).join(", ")}] at ${req.table.length}: fitness ${fitness} in ${seconds.toFixed(2)}s`)
        return { fitness: String(fitness), seconds, worker: o.id }
      }).pipe(
        // A GPU forward cannot be abandoned: an interrupt waits for the evaluation to end.
        Effect.uninterruptible,
        gpuLock.withPermits(1),
      )

    return FitnessEvaluation.of({ Evaluate: ({ payload }) => evaluate(payload.request) })
  })

/** The worker runner as a layer: launch it (Layer.launch) with a Gpu provided. */
export const workerLayer = (o: WorkerOptions) =>
  Layer.unwrap(Effect.map(handlers(o), (h) => FitnessEvaluation.toLayer(h, { maxIdleTime: "30 seconds" }))).pipe(
    Layer.provide(
      NodeClusterSocket.layer({
        storage: "sql",
        shardingConfig: {
          runnerAddress: Option.some(RunnerAddress.make(o.address.host, o.address.port)),
          runnerListenAddress: o.listen === undefined ? Option.none() : Option.some(RunnerAddress.make(o.listen.host, o.listen.port)),
          // Persisted messages that missed the direct path (a shard moving) are picked up this soon.
          entityMessagePollInterval: "1 second",
        },
      }),
    ),
    Layer.provideMerge(storeLayer(o.store, `ropeway-worker:${o.id}`)),
  )
