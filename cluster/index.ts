/**
 * Scale-out of the search's fitness evaluations (effect/cluster, Postgres message storage):
 * - workers: `ropeway worker --store postgres://...` (cli/commands/worker.ts → ./worker.ts);
 * - coordinator: a workflow's `cluster: { store, concurrency? }` → `clusterLayer(wf.cluster)`, provided
 *   to the steps, gives the search stage a SearchEvaluator that sends its cache misses to the workers.
 * Without `cluster:` nothing here is loaded or needed.
 */
import { Effect, Layer } from "effect"
import type { SearchEvaluator } from "../stages/search.ts"
import { StageError } from "../pipeline/workflow/stage.ts"
import { clusterEvaluatorLayer } from "./evaluator.ts"
import { parseClusterSettings } from "./store.ts"

export { clusterEvaluatorLayer, redact } from "./evaluator.ts"
export { type ClusterSettings, parseClusterSettings, storeLayer } from "./store.ts"
export { FitnessEvaluation } from "./protocol.ts"
export { type WorkerOptions, workerLayer } from "./worker.ts"

/** The layer for a workflow's `cluster:` value; a malformed one fails it with a message naming `cluster.<field>`. */
export const clusterLayer = (cluster: unknown): Layer.Layer<SearchEvaluator, StageError> =>
  Layer.unwrap(
    Effect.try({
      try: () => clusterEvaluatorLayer(parseClusterSettings(cluster)),
      catch: (e) => new StageError({ message: e instanceof Error ? e.message : String(e), cause: e }),
    }),
  )

/** Runs `self` with the cluster's evaluator when `cluster` is set; as is otherwise. */
export const withCluster =
  (cluster: unknown) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | StageError, Exclude<R, SearchEvaluator>> =>
    cluster === undefined ? (self as Effect.Effect<A, E, Exclude<R, SearchEvaluator>>) : Effect.provide(self, clusterLayer(cluster))
