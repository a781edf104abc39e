/**
 * What every stage repeats, in one place: failing with a tagged error (a thrown InputError, BadParams, ...
 * keeps its tag; anything else becomes a StageError with context), running plain code that may throw, the
 * GPU (the run's shared device or one for this step), opening the tokenizer, reading inputs by name.
 */
import { Effect, Option } from "effect"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { errorMessage, GpuUnavailable, isUserError, type RopewayError, StageError } from "../common/errors.ts"
import { acquireRuntime, Gpu } from "../kernels/device.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import type { StageContext } from "../pipeline/workflow/stage.ts"
import { byteTokenizer, loadTokenizer, type TextTokenizer } from "../plugins/data/tokenizer.ts"

export const fail = (message: string, cause?: unknown): StageError => new StageError({ message, ...(cause === undefined ? {} : { cause }) })

/** A ropeway error as it is (its message names the file or field); anything else with `what` before its message. */
export const asStageError = (e: unknown, what: string): RopewayError => (isUserError(e) ? e : fail(`${what}: ${errorMessage(e)}`, e))

/** Runs plain code that may throw, failing the stage with a tagged error. */
export const attempt = <A>(what: string, f: () => A): Effect.Effect<A, RopewayError> => Effect.try({ try: f, catch: (e) => asStageError(e, what) })

/** The same for a promise. */
export const attemptPromise = <A>(what: string, f: () => Promise<A>): Effect.Effect<A, RopewayError> =>
  Effect.tryPromise({ try: f, catch: (e) => asStageError(e, what) })

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
