/**
 * What every evaluation (perplexity, needle, passkey, short context, retrieval, tasks) shares: the loaded
 * model and its documents, how intervals are made, how a method's table is made at a length, and a
 * checkpointed computation, so an interrupted evaluation resumes where it stopped (each computation is
 * uninterruptible, the gaps between them are not).
 */
import { Effect } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { attempt, attemptPromise, type RopewayError } from "../../common/errors.ts"
import { writeJsonAtomic } from "../../common/files.ts"
import { sha256 } from "../../common/hash.ts"
import type { StageProgress } from "../../pipeline/workflow/stage.ts"
import type { TextTokenizer } from "../data/tokenizer.ts"
import type { LoadedModel } from "../models/family.ts"
import { resolveRope } from "../rope/index.ts"
import type { ChosenTable, RopeSpec } from "../rope/types.ts"
import type { IntervalOptions } from "./intervals.ts"
import { type Doc, isOnTop, type Method, methodScaling, onTopScaling } from "./protocols.ts"

export interface EvalContext {
  readonly model: LoadedModel
  readonly tok: TextTokenizer
  /** Whether the tokenizer has a BOS (prepended to every window). */
  readonly bos: boolean
  readonly spec: RopeSpec
  /** The original context the baselines scale from. */
  readonly L0: number
  /** What metrics.json calls the checkpoint. */
  readonly label: string
  readonly docs: readonly Doc[]
  /** Where the documents came from, for metrics.json. */
  readonly data: string
  readonly seed: number
  /** Tokens per forward chunk (memory only). */
  readonly chunk: number | undefined
  /** Level, bootstrap resamples and their seed, what a perplexity resamples. */
  readonly intervals: IntervalOptions
  readonly checkpointDir: string
  readonly progress: StageProgress
}

/** sha256 of `text`, 24 hex digits: checkpoint file names. */
export const sha = (text: string): string => sha256(text).slice(0, 24)

/** `{ chunk }` when one is set, for the model's options. */
export const chunkOption = (e: EvalContext): { readonly chunk?: number } => (e.chunk === undefined ? {} : { chunk: e.chunk })

/**
 * A method's table at scale max(1, L/L0) (the model's own for "model"; for model+pi / model+yarn its
 * longest set extended to L, protocols.ts onTopScaling), resolved for a sequence of `n` tokens.
 */
export const tableAt = (e: EvalContext, method: Method, L: number, n: number, scale = Math.max(1, L / e.L0)): Effect.Effect<ChosenTable, RopewayError> =>
  attempt(`RoPE ${method} at ${L}`, () => {
    if (isOnTop(method)) return resolveRope({ ...e.spec, scaling: onTopScaling(e.spec, method, L).scaling }, `evaluate ${method}`)(n)
    const scaling = methodScaling(method, scale, e.L0)
    return scaling === "model" ? e.model.rope(n) : resolveRope({ ...e.spec, originalMaxPositions: e.L0, scaling }, `evaluate ${method}`)(n)
  })

/** A result kept in the checkpoint folder: computed once (uninterruptibly), re-read after an interrupt. */
export const saved = <A>(e: EvalContext, name: string, compute: () => Promise<A>, what: string): Effect.Effect<A, RopewayError> => {
  const file = join(e.checkpointDir, `${name}.json`)
  if (existsSync(file)) return attempt("checkpoint", () => JSON.parse(readFileSync(file, "utf8")) as A)
  return Effect.uninterruptible(attemptPromise(what, compute).pipe(Effect.tap((v) => attempt("checkpoint", () => writeJsonAtomic(file, v)))))
}
