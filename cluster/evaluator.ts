/**
 * The coordinator's side: a SearchEvaluator that sends each fitness request to the worker runners
 * through effect/cluster (a client-only runner: it owns no shards and needs no listening port) and
 * waits for the reply. The search stage keeps everything else (strategy, cache, logs, resume), so a
 * distributed search differs from a local one only in where the forwards run.
 */
import { NodeClusterSocket } from "@effect/platform-node"
import { sha256 } from "../common/hash.ts"
import { Cause, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { StageError } from "../pipeline/workflow/stage.ts"
import { type FitnessRequest, SearchEvaluator } from "../plugins/search/evaluator.ts"
import { FitnessEvaluation } from "./protocol.ts"
import { type ClusterSettings, SamplesStore, storeLayer } from "./store.ts"

const message = (e: unknown): string =>
  typeof e === "object" && e !== null && "message" in e && typeof e.message === "string" && e.message !== "" ? e.message : String(e)

/** One entity per distinct request: its content hash, so ids spread evenly over shards (and workers). */
const entityId = (req: FitnessRequest): string => sha256(JSON.stringify(req)).slice(0, 32)

const evaluatorEffect = (settings: ClusterSettings) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const store = new SamplesStore(sql)
    const clientFor = yield* FitnessEvaluation.client
    return SearchEvaluator.of({
      concurrency: settings.concurrency,
      evaluate: (request, samples) =>
        Effect.gen(function* () {
          for (const hash of request.penalty === null ? [request.samples] : [request.samples, request.penalty.samples]) {
            const s = samples.get(hash)
            if (s === undefined) return yield* Effect.fail(new Error(`no samples with hash ${hash}`))
            yield* store.put(hash, s)
          }
          const reply = yield* clientFor(entityId(request)).Evaluate({ request })
          return { fitness: Number(reply.fitness), seconds: reply.seconds }
        }).pipe(Effect.mapError((e) => new StageError({ message: `cluster evaluation: ${message(e)}`, cause: e }))),
    })
  })

/**
 * SearchEvaluator on the workers behind `settings.store`. Acquiring it connects to Postgres (and fails
 * with a StageError when it cannot); releasing it closes the client runner and the pool.
 */
export const clusterEvaluatorLayer = (settings: ClusterSettings): Layer.Layer<SearchEvaluator, StageError> =>
  Layer.effect(SearchEvaluator, evaluatorEffect(settings)).pipe(
    Layer.provide(NodeClusterSocket.layer({ clientOnly: true, storage: "sql" })),
    Layer.provide(storeLayer(settings.store)),
    Layer.catchCause((cause) => {
      const e = Cause.squash(cause)
      return Layer.effect(SearchEvaluator, Effect.fail(new StageError({ message: `cluster store ${redact(settings.store)}: ${message(e)}`, cause: e })))
    }),
  )

/** The URL without its password, for messages. */
export const redact = (url: string): string => {
  try {
    const u = new URL(url)
    if (u.password !== "") u.password = "***"
    return u.toString()
  } catch {
    return url
  }
}
