/**
 * The plugin API and the registry. A plugin is a plain object made by `definePlugin`; the built-ins go
 * through the same `Registry.register` as a user's plugin (the CLI hands them to the loader). The engine
 * knows the kinds of contribution by name only: what a RoPE method, a strategy or a model family must
 * look like is owned by the library (plugins/), which refines `Contribution` for each.
 */
import { Context, type Effect, type Schema } from "effect"
import type { RopewayError } from "../../common/errors.ts"
import type { AnyStage, StageContext } from "./stage.ts"

/** What every contribution has. The kinds below are open: the library refines them. */
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
/** A named contribution whose shape the library checks (no open index: library interfaces fit it as they are). */
export interface Named {
  readonly name: string
  readonly description?: string
}
/** A RoPE method (`resolve(spec)`; shape owned by plugins/rope). */
export interface RopeMethodContribution extends Named {}
/** A model family: recognises, plans, loads and runs a model folder (shape owned by plugins/models/family.ts). */
export interface ModelFamilyContribution extends Named {}

/**
 * A named built-in model. A workflow's `model:` may name one; `materialize` writes the model into a folder
 * (run once, cached in the store like a step). An entry without `materialize` names a family.
 */
export interface ModelContribution extends Contribution {
  readonly version?: string
  /**
   * Writes the model (an HF-layout folder) into `dir`, deterministically from `ctx.seed`. Runs as the
   * workflow's first step, `model`, with the usual caching, checkpoint folder and progress.
   */
  readonly materialize?: (dir: string, ctx: StageContext<unknown, never, "model">) => Effect.Effect<unknown, RopewayError, any>
}

/**
 * A top-level key of the workflow file that a plugin owns (the cluster's `cluster:`): checked against
 * `schema` with positions at load time; when present, `provide` wraps every step's Effect (it may add
 * services, e.g. an evaluator that sends work to other machines).
 */
export interface WorkflowSetting<A = any> extends Contribution {
  readonly schema: Schema.Codec<A, any, never, never>
  readonly provide: (value: A) => <X, E, R>(self: Effect.Effect<X, E, R>) => Effect.Effect<X, E | RopewayError, any>
}

/** Something to do after a successful run (the run report); the CLI calls them in registration order. */
export interface AfterRun extends Contribution {
  readonly run: (runDir: string, manifest: { readonly steps: ReadonlyArray<unknown> }) => Promise<void>
}

export interface PluginDefinition {
  readonly name: string
  readonly version: string
  readonly description?: string
  readonly stages?: readonly AnyStage[]
  readonly models?: readonly ModelContribution[]
  readonly families?: readonly ModelFamilyContribution[]
  readonly ropeMethods?: readonly RopeMethodContribution[]
  readonly searchStrategies?: readonly SearchStrategy[]
  readonly fitness?: readonly FitnessFunction[]
  readonly datasets?: readonly Dataset[]
  readonly settings?: readonly WorkflowSetting[]
  readonly afterRun?: readonly AfterRun[]
  /**
   * Called for every contribution of a kind registered into the same registry (this plugin's and later
   * ones'): how the library hears of a user's RoPE method. Returns a problem to report, or undefined.
   */
  readonly onRegister?: Partial<Record<Kind, (value: Named, plugin: string) => string | undefined>>
}

export const PluginTypeId: unique symbol = Symbol.for("ropeway/Plugin")
export interface Plugin extends PluginDefinition {
  readonly [PluginTypeId]: true
}

export const definePlugin = (def: PluginDefinition): Plugin => ({ ...def, [PluginTypeId]: true })

export const isPlugin = (u: unknown): u is Plugin =>
  typeof u === "object" && u !== null && (u as Record<symbol, unknown>)[PluginTypeId] === true

export const KINDS = ["stages", "models", "families", "ropeMethods", "searchStrategies", "fitness", "datasets", "settings", "afterRun"] as const
/** The registry keeps plain maps per kind; `Kind` names them for listings and errors. */
export type Kind = (typeof KINDS)[number]

export const kindLabel: Record<Kind, string> = {
  stages: "stage",
  models: "model",
  families: "model family",
  ropeMethods: "RoPE method",
  searchStrategies: "search strategy",
  fitness: "fitness function",
  datasets: "dataset",
  settings: "workflow setting",
  afterRun: "after-run action",
}

export interface PluginInfo {
  readonly name: string
  readonly version: string
  /** "builtin", a file path, or an npm package name (with the version its package.json gives). */
  readonly source: string
}

export interface Entry<A> {
  readonly value: A
  readonly plugin: string
}

type Hook = (value: Named, plugin: string) => string | undefined

export class Registry {
  readonly plugins: PluginInfo[] = []
  readonly stages = new Map<string, Entry<AnyStage>>()
  readonly models = new Map<string, Entry<ModelContribution & { readonly pluginVersion: string }>>()
  readonly families = new Map<string, Entry<ModelFamilyContribution>>()
  readonly ropeMethods = new Map<string, Entry<RopeMethodContribution>>()
  readonly searchStrategies = new Map<string, Entry<SearchStrategy>>()
  readonly fitness = new Map<string, Entry<FitnessFunction>>()
  readonly datasets = new Map<string, Entry<Dataset>>()
  readonly settings = new Map<string, Entry<WorkflowSetting>>()
  readonly afterRun = new Map<string, Entry<AfterRun>>()
  private readonly seen = new Set<Plugin>()
  private readonly hooks: Array<readonly [Kind, Hook]> = []

  /** Adds a plugin's contributions; returns a problem (a name defined twice) instead of throwing. */
  register(plugin: Plugin, source: string): string | undefined {
    if (this.seen.has(plugin)) return undefined // the same module listed twice: harmless
    const clash = this.clash(plugin)
    if (clash !== undefined) return clash
    this.seen.add(plugin)
    this.plugins.push({ name: plugin.name, version: plugin.version, source })
    for (const [kind, hook] of Object.entries(plugin.onRegister ?? {}) as Array<[Kind, Hook]>) {
      this.hooks.push([kind, hook])
      // contributions registered before the hook was known
      for (const e of (this[kind] as Map<string, Entry<Named>>).values()) {
        const problem = hook(e.value, e.plugin)
        if (problem !== undefined) return problem
      }
    }
    for (const kind of KINDS) {
      const map = this[kind] as Map<string, Entry<Named>>
      for (const value of (plugin[kind] ?? []) as readonly Named[]) {
        const v = kind === "models" ? { ...value, pluginVersion: plugin.version } : value
        map.set(value.name, { value: v, plugin: plugin.name })
        for (const [k, hook] of this.hooks) {
          const problem = k === kind ? hook(v, plugin.name) : undefined
          if (problem !== undefined) return problem
        }
      }
    }
    return undefined
  }

  private clash(plugin: Plugin): string | undefined {
    for (const kind of KINDS) {
      for (const x of (plugin[kind] ?? []) as readonly Named[]) {
        const prior = (this[kind] as Map<string, Entry<Named>>).get(x.name)
        if (prior !== undefined) {
          return `plugin "${plugin.name}" defines ${kindLabel[kind]} "${x.name}", already defined by plugin "${prior.plugin}"`
        }
      }
    }
    return undefined
  }

  names(kind: Kind): string[] {
    return [...this[kind].keys()].sort()
  }

  stage(name: string): AnyStage | undefined {
    return this.stages.get(name)?.value
  }

  /** Every contribution of a kind, in registration order. */
  all(kind: Kind): Named[] {
    return [...(this[kind] as Map<string, Entry<Named>>).values()].map((e) => e.value)
  }
}

/** The registry of the workflow being run, for stages that look up strategies, datasets, model families. */
export class PluginRegistry extends Context.Service<PluginRegistry, Registry>()("ropeway/PluginRegistry") {}
