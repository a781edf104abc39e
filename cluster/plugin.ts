/**
 * The cluster as a built-in plugin: it owns the workflow's top-level `cluster:` setting (checked by its
 * schema with positions at load time) and, when a workflow has one, provides every step with a
 * SearchEvaluator that sends fitness evaluations to the workers. The CLI registers it like any plugin.
 */
import { Effect } from "effect"
import { definePlugin } from "../pipeline/workflow/plugin.ts"
import { clusterEvaluatorLayer } from "./evaluator.ts"
import { type ClusterSettings, ClusterSettingsSchema } from "./store.ts"

export const clusterPlugin = definePlugin({
  name: "ropeway-cluster",
  version: "0.1.0",
  description: "scale-out of search fitness evaluations to `ropeway worker` processes (effect/cluster, Postgres)",
  settings: [
    {
      name: "cluster",
      description: "{ store: postgres://..., concurrency? }: send the search's fitness evaluations to the workers on that store",
      schema: ClusterSettingsSchema,
      provide: (settings: ClusterSettings) => (self) => Effect.provide(self, clusterEvaluatorLayer(settings)),
    },
  ],
})
