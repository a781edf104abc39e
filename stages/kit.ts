/**
 * What every stage repeats, in one place: failing with a tagged error (a thrown InputError, BadParams, ...
 * keeps its tag; anything else becomes a StageError with context), running plain code that may throw, the
 * GPU (the run's shared device or one for this step), opening a model through the registry's families,
 * opening the tokenizer, reading inputs by name.
 */
import { Context, Effect, Option } from "effect"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { attempt, attemptPromise, errorMessage, GpuUnavailable } from "../common/errors.ts"
import { acquireRuntime, Gpu } from "../kernels/device.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { PluginRegistry } from "../pipeline/workflow/plugin.ts"
import type { StageContext } from "../pipeline/workflow/stage.ts"
import { byteTokenizer, loadTokenizer, type TextTokenizer } from "../plugins/data/tokenizer.ts"
import type { InspectOptions, LoadedModel, ModelFamily } from "../plugins/models/family.ts"
import { checkFits, familiesOf, inspectModel } from "../plugins/models/registry.ts"

export { asStageError, attempt, attemptPromise, fail } from "../common/errors.ts"

/** The run's shared device when the runner provides one, else one acquired (and destroyed) for this step. */
export const gpuRuntime = Effect.gen(function* () {
  const shared = Option.getOrUndefined(yield* Effect.serviceOption(Gpu))
  if (shared !== undefined) return shared
  return yield* Effect.acquireRelease(
    Effect.tryPromise({ try: () => acquireRuntime(), catch: (e) => (e instanceof GpuUnavailable ? e : new GpuUnavailable({ message: `no GPU: ${errorMessage(e)}` })) }),
    (r) => Effect.sync(() => r.destroy()),
  )
}) satisfies Effect.Effect<GpuRuntime, GpuUnavailable, unknown>

/** `spec` ("byte" or a folder with tokenizer.json), else the model folder's tokenizer.json, else bytes. */
export function openTokenizer(spec: string | undefined, modelDir: string): TextTokenizer {
  if (spec !== undefined) return loadTokenizer(spec)
  return existsSync(join(modelDir, "tokenizer.json")) ? loadTokenizer(modelDir) : byteTokenizer()
}

/** An input by name, for stages with two names that differ in their inputs (`search` / `search-factors`). */
export const inputPath = (ctx: StageContext<unknown, string, string>, name: string): string | undefined => (ctx.inputs as Record<string, string | undefined>)[name]

/** The corpus a `data:` param names, for the loader to resolve against the workflow file (`paths` hook). */
export const corpusPath = (p: { readonly data?: unknown }) =>
  typeof p.data === "object" && p.data !== null && (p.data as { source?: unknown }).source === "corpus" ? [{ path: ["data", "path"], what: "corpus" }] : []

/**
 * Replaces how stages load a model folder (tests, other backends). Absent: the registry's family that
 * recognises the folder, on the GPU.
 */
export class ModelLoader extends Context.Service<ModelLoader, { readonly load: (dir: string, options?: InspectOptions) => Promise<LoadedModel> }>()("ropeway/ModelLoader") {}

/** The model families of this run's registry (the built-in ones when a stage runs on its own). */
export const modelFamilies: Effect.Effect<ModelFamily[]> = Effect.map(Effect.serviceOption(PluginRegistry), (r) => familiesOf(Option.getOrUndefined(r)))

/**
 * A model folder on the device for inputs of up to `length` tokens, released with the scope: recognised by
 * a family, refused before loading when it does not fit (DoesNotFit, with the numbers), then loaded.
 */
export const openModel = (dir: string, o: { readonly length: number; readonly chunk?: number; readonly options?: InspectOptions }) =>
  Effect.gen(function* () {
    const loader = Option.getOrUndefined(yield* Effect.serviceOption(ModelLoader))
    const release = (m: LoadedModel) => Effect.sync(() => m.dispose())
    if (loader !== undefined) return yield* Effect.acquireRelease(attemptPromise(`cannot load the model ${dir}`, () => loader.load(dir, o.options)), release)
    const families = yield* modelFamilies
    const { family, model } = yield* attempt(`cannot load the model ${dir}`, () => inspectModel(families, dir, o.options))
    const rt = yield* gpuRuntime
    yield* attempt("memory", () => checkFits(family, model, o.length, rt.limits, o.chunk === undefined ? {} : { chunk: o.chunk }))
    return yield* Effect.acquireRelease(attemptPromise(`cannot load the model ${dir}`, () => family.load(rt, model)), release)
  })
