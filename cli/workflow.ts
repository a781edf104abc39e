/**
 * The engine wired with ropeway's built-ins, as the CLI runs it: the stage plugins (stages/builtins.ts)
 * and the cluster (cluster/plugin.ts) are handed to the engine's loader like any user's plugin, and the
 * commands that take `--plugin` build their registry here. Tests and embedding programs import from here
 * for a workflow with the built-ins; pipeline/workflow stays the engine alone.
 */
import { Effect } from "effect"
import { isAbsolute, resolve } from "node:path"
import { errorMessage, InputError } from "../common/errors.ts"
import { clusterPlugin } from "../cluster/plugin.ts"
import { isPlugin, type LoadOptions, loadWorkflow as loadWithEngine, type Plugin, Registry, resolvePackage, type Workflow, type WorkflowInvalid } from "../pipeline/workflow/index.ts"
import { stagePlugins } from "../stages/builtins.ts"

export * from "../pipeline/workflow/index.ts"

/** ropeway's built-in plugins, in registration order. */
export const builtinPlugins = (): readonly Plugin[] => [...stagePlugins(), clusterPlugin]

/** `loadWorkflow` with the built-ins registered first. */
export const loadWorkflow = (file: string, options: LoadOptions = {}): Effect.Effect<Workflow, WorkflowInvalid> =>
  loadWithEngine(file, { builtins: builtinPlugins(), ...options })

const looksLikePath = (spec: string): boolean => spec.startsWith(".") || spec.startsWith("/") || /\.(m?[jt]s|tsx?)$/.test(spec)

/** Imports plugin files or packages (resolved from the working directory), for `--plugin` flags. */
export const importPluginSpecs = (specs: readonly string[]): Effect.Effect<Array<{ plugin: Plugin; source: string }>, InputError> =>
  Effect.forEach(specs, (spec) =>
    Effect.tryPromise({
      try: async () => {
        const target = looksLikePath(spec) ? (isAbsolute(spec) ? spec : resolve(spec)) : resolvePackage(spec, process.cwd())
        const mod = (await import(target)) as Record<string, unknown>
        const found = [...new Set(Object.values(mod).filter(isPlugin))]
        if (found.length === 0) throw new Error(`${target} exports no plugin; expected \`export default definePlugin({ name, version, ... })\``)
        return found.map((plugin) => ({ plugin, source: looksLikePath(spec) ? target : spec }))
      },
      catch: (e) => new InputError({ message: `plugin ${spec}: ${errorMessage(e).split("\n")[0]}` }),
    })).pipe(Effect.map((xs) => xs.flat()))

/** The built-ins plus `plugins`, in one registry (a name defined twice is an error). */
export function registryWith(plugins: ReadonlyArray<{ plugin: Plugin; source: string }>): Registry {
  const reg = new Registry()
  for (const p of builtinPlugins()) reg.register(p, "builtin")
  for (const { plugin, source } of plugins) {
    const clash = reg.register(plugin, source)
    if (clash !== undefined) throw new InputError({ message: clash })
  }
  return reg
}

/** `--plugin` flags to a registry (the built-ins first). */
export const registryFromFlags = (specs: readonly string[]): Effect.Effect<Registry, InputError> =>
  importPluginSpecs(specs).pipe(Effect.flatMap((ps) => Effect.try({ try: () => registryWith(ps), catch: (e) => (e instanceof InputError ? e : new InputError({ message: errorMessage(e) })) })))
