/**
 * The plugin API and the registry. A plugin is a plain object made by `definePlugin`; the built-ins go
 * through the same `Registry.register` as a user's plugin. RoPE methods are forwarded to the existing
 * registry in plugins/rope (one source of truth); every other kind is kept here, by name.
 */
import { Context, type Effect } from "effect"
import { getRopeMethod, registerRopeMethod, type RopeMethod } from "../../plugins/rope/index.ts"
import type { AnyStage, StageContext, StageError } from "./stage.ts"

/** What every contribution has. The kinds below are open: extend them by declaration merging. */
export interface Contribution {
  readonly name: string
  readonly description?: string
  readonly [extra: string]: unknown
}
/** An evolutionary search, a grid, ... (shape owned by plugins/search). */
export interface SearchStrategy extends Contribution {}
/** A fitness function for searches (perplexity, passkey accuracy, ...). */
export interface FitnessFunction extends Contribution {}
/** A tokenizer, corpus or synthetic task. */
export interface Dataset extends Contribution {}
/**
 * A model family or a named built-in model. A workflow's `model:` may name one that has `materialize`,
 * which writes the model into a folder (run once, cached in the store like a step).
 */
export interface ModelContribution extends Contribution {
  readonly version?: string
  /**
   * Writes the model (an HF-layout folder) into `dir`, deterministically from `ctx.seed`. Runs as the
   * workflow's first step, `model`, with the usual caching, checkpoint folder and progress.
   */
  readonly materialize?: (dir: string, ctx: StageContext<unknown, never, "model">) => Effect.Effect<unknown, StageError, any>
}

export interface PluginDefinition {
  readonly name: string
  readonly version: string
  readonly description?: string
  readonly stages?: readonly AnyStage[]
  readonly ropeMethods?: readonly RopeMethod[]
  readonly searchStrategies?: readonly SearchStrategy[]
  readonly fitness?: readonly FitnessFunction[]
  readonly datasets?: readonly Dataset[]
  readonly models?: readonly ModelContribution[]
}

export const PluginTypeId: unique symbol = Symbol.for("ropeway/Plugin")
export interface Plugin extends PluginDefinition {
  readonly [PluginTypeId]: true
}

export const definePlugin = (def: PluginDefinition): Plugin => ({ ...def, [PluginTypeId]: true })

export const isPlugin = (u: unknown): u is Plugin =>
  typeof u === "object" && u !== null && (u as Record<symbol, unknown>)[PluginTypeId] === true

/** The registry keeps plain maps per kind; `Kind` names them for listings and errors. */
export type Kind = "stages" | "searchStrategies" | "fitness" | "datasets" | "models"

export interface PluginInfo {
  readonly name: string
  readonly version: string
  /** "builtin", a file path, or an npm package name (with the version its package.json gives). */
  readonly source: string
}

interface Entry<A> {
  readonly value: A
  readonly plugin: string
}

export class Registry {
  readonly plugins: PluginInfo[] = []
  readonly stages = new Map<string, Entry<AnyStage>>()
  readonly searchStrategies = new Map<string, Entry<SearchStrategy>>()
  readonly fitness = new Map<string, Entry<FitnessFunction>>()
  readonly datasets = new Map<string, Entry<Dataset>>()
  readonly models = new Map<string, Entry<ModelContribution & { readonly pluginVersion: string }>>()
  private readonly seen = new Set<Plugin>()

  /** Adds a plugin's contributions; returns a problem (a name defined twice) instead of throwing. */
  register(plugin: Plugin, source: string): string | undefined {
    if (this.seen.has(plugin)) return undefined // the same module listed twice: harmless
    const clash = this.clash(plugin)
    if (clash !== undefined) return clash
    this.seen.add(plugin)
    this.plugins.push({ name: plugin.name, version: plugin.version, source })
    const add = <A extends { readonly name: string }>(map: Map<string, Entry<A>>, xs: readonly A[] | undefined) => {
      for (const value of xs ?? []) map.set(value.name, { value, plugin: plugin.name })
    }
    add(this.stages, plugin.stages)
    add(this.searchStrategies, plugin.searchStrategies)
    add(this.fitness, plugin.fitness)
    add(this.datasets, plugin.datasets)
    add(this.models, plugin.models?.map((m) => ({ ...m, pluginVersion: plugin.version })))
    for (const m of plugin.ropeMethods ?? []) registerRopeMethod(m)
    return undefined
  }

  private clash(plugin: Plugin): string | undefined {
    const kinds: ReadonlyArray<readonly [Kind, readonly { readonly name: string }[] | undefined]> = [
      ["stages", plugin.stages],
      ["searchStrategies", plugin.searchStrategies],
      ["fitness", plugin.fitness],
      ["datasets", plugin.datasets],
      ["models", plugin.models],
    ]
    for (const [kind, xs] of kinds) {
      for (const x of xs ?? []) {
        const prior = this[kind].get(x.name)
        if (prior !== undefined) {
          return `plugin "${plugin.name}" defines ${kindLabel[kind]} "${x.name}", already defined by plugin "${prior.plugin}"`
        }
      }
    }
    for (const m of plugin.ropeMethods ?? []) {
      const prior = getRopeMethod(m.name)
      if (prior !== undefined && prior !== m) return `plugin "${plugin.name}" defines RoPE method "${m.name}", which already exists`
    }
    return undefined
  }

  names(kind: Kind): string[] {
    return [...this[kind].keys()].sort()
  }

  stage(name: string): AnyStage | undefined {
    return this.stages.get(name)?.value
  }
}

export const kindLabel: Record<Kind, string> = {
  stages: "stage",
  searchStrategies: "search strategy",
  fitness: "fitness function",
  datasets: "dataset",
  models: "model",
}

/** The registry of the workflow being run, for stages that look up strategies, datasets, models. */
export class PluginRegistry extends Context.Service<PluginRegistry, Registry>()("ropeway/PluginRegistry") {}
