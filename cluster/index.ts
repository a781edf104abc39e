/**
 * Scale-out of the search's fitness evaluations (effect/cluster, Postgres message storage):
 * - workers: `ropeway worker --store postgres://...` (cli/commands/worker.ts → ./worker.ts);
 * - coordinator: a workflow's `cluster: { store, concurrency? }` (the setting plugin.ts contributes) provides
 *   the steps with a SearchEvaluator that sends the search's cache misses to the workers.
 * Without `cluster:` nothing here is loaded or needed.
 */
import { Effect, Layer } from "effect"
import type { SearchEvaluator } from "../plugins/search/evaluator.ts"
import { BadParams, errorMessage, StageError } from "../common/errors.ts"
import { clusterEvaluatorLayer } from "./evaluator.ts"
import { parseClusterSettings } from "./store.ts"

export { clusterEvaluatorLayer, redact } from "./evaluator.ts"
export { type ClusterSettings, ClusterSettingsSchema, parseClusterSettings, storeLayer } from "./store.ts"
export { clusterPlugin } from "./plugin.ts"
export { FitnessEvaluation } from "./protocol.ts"
export { type WorkerOptions, workerLayer } from "./worker.ts"

/** The layer for a workflow's `cluster:` value; a malformed one fails it with a message naming `cluster.<field>`. */
export const clusterLayer = (cluster: unknown): Layer.Layer<SearchEvaluator, StageError | BadParams> =>
  Layer.unwrap(
    Effect.try({
      try: () => clusterEvaluatorLayer(parseClusterSettings(cluster)),
      catch: (e) => (e instanceof BadParams ? e : new StageError({ message: errorMessage(e), cause: e })),
    }),
  )

/** Runs `self` with the cluster's evaluator when `cluster` is set; as is otherwise. */
export const withCluster =
  (cluster: unknown) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | StageError | BadParams, Exclude<R, SearchEvaluator>> =>
    cluster === undefined ? (self as Effect.Effect<A, E, Exclude<R, SearchEvaluator>>) : Effect.provide(self, clusterLayer(cluster))
