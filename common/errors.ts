/**
 * The failures a user can act on, one tagged error per kind, matched by tag (`Effect.catchTag`, or
 * `isUserError` for "any of them"). Each message names the file (or flag, or field) and what was expected;
 * the CLI prints it once as `error: <message>` and exits 1, with no stack trace.
 *
 * They are Errors too, so plain (non-Effect) code such as loaders throws them, and a stage's Effect keeps
 * the tag when it catches one (`asStageError`). An interrupt (Ctrl-C) is not an error value: it is Effect's
 * interruption, which the runner records ("interrupted") and the CLI ends with exit 130.
 */
import { Data, Effect } from "effect"

/** A file, flag or field has a value ropeway cannot use: `file: problem`. */
export class InputError extends Data.TaggedError("InputError")<{ readonly message: string }> {}

/** Characters of a problem shown: an error that echoes a hostile file's values stays one readable line. */
const MAX_PROBLEM = 600

/** One line of at most MAX_PROBLEM characters: line breaks and other control characters escaped, the rest cut. */
export const oneLine = (text: string): string => {
  const s = text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => (c === "\n" ? "\\n" : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`))
  return s.length <= MAX_PROBLEM ? s : `${s.slice(0, MAX_PROBLEM)}… (${s.length - MAX_PROBLEM} more characters)`
}

/** `file: problem`, the shape every input error takes, on one line. */
export const inputError = (file: string, problem: string): InputError => new InputError({ message: `${file}: ${oneLine(problem)}` })

/** A step's params (or a plugin's params, or a workflow setting) fail their schema or a rule: `where.path: problem`. */
export class BadParams extends Data.TaggedError("BadParams")<{ readonly message: string }> {}

/** The model folder (or file) named is not there. */
export class ModelNotFound extends Data.TaggedError("ModelNotFound")<{ readonly path: string; readonly message: string }> {}

/** No model family recognises the folder (its config.json names an architecture none handles). */
export class UnsupportedModel extends Data.TaggedError("UnsupportedModel")<{ readonly file: string; readonly message: string }> {}

/** The model would not fit the device at the length asked for: refused before loading, with the numbers. */
export class DoesNotFit extends Data.TaggedError("DoesNotFit")<{
  readonly message: string
  /** Bytes the largest single buffer needs, and the device's limit for one. */
  readonly needed: number
  readonly limit: number
}> {}

/** The tokenizer has ids the model's vocabulary lacks. */
export class TokenizerMismatch extends Data.TaggedError("TokenizerMismatch")<{
  readonly message: string
  readonly tokenizerVocab: number
  readonly modelVocab: number
}> {}

/** No usable WebGPU adapter; the message says what was tried and how to install Mesa's software driver. */
export class GpuUnavailable extends Data.TaggedError("GpuUnavailable")<{ readonly message: string }> {}

/** A stage could not finish for a reason of its own (a diverged loss, non-finite perplexities, a failed check). */
export class StageError extends Data.TaggedError("StageError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** A file that could not be written (disk full, no permission, ...): `path: cannot write: <reason>`. */
export class WriteError extends Data.TaggedError("WriteError")<{ readonly path: string; readonly message: string; readonly cause?: unknown }> {}

const WRITE_REASONS: Readonly<Record<string, string>> = {
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EFBIG: "file too large for this file system or process limit",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "read-only file system",
  EIO: "input/output error",
}

/** The WriteError for a failure writing `path`, naming the reason; a WriteError passes through unchanged. */
export const writeError = (path: string, cause: unknown): WriteError => {
  if (cause instanceof WriteError) return cause
  const code = (cause as NodeJS.ErrnoException | undefined)?.code
  const reason = code !== undefined && WRITE_REASONS[code] !== undefined ? `${WRITE_REASONS[code]} (${code})` : errorMessage(cause)
  return new WriteError({ path, message: `${path}: cannot write: ${reason}`, cause })
}

/** The errors a stage's Effect may fail with. */
export type RopewayError =
  | InputError | BadParams | ModelNotFound | UnsupportedModel | DoesNotFit | TokenizerMismatch | GpuUnavailable | StageError | WriteError

const USER_TAGS = new Set([
  "InputError", "BadParams", "ModelNotFound", "UnsupportedModel", "DoesNotFit", "TokenizerMismatch", "GpuUnavailable", "StageError", "WriteError",
])

/** Whether `e` is one of the errors above (the CLI prints these as one line). */
export const isUserError = (e: unknown): e is RopewayError =>
  typeof e === "object" && e !== null && USER_TAGS.has((e as { _tag?: unknown })._tag as string)

/** The message of anything thrown, on one line. */
export const errorMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** A StageError (the generic failure) with an optional cause. */
export const fail = (message: string, cause?: unknown): StageError => new StageError({ message, ...(cause === undefined ? {} : { cause }) })

/** A ropeway error as it is (its message names the file or field); anything else with `what` before its message. */
export const asStageError = (e: unknown, what: string): RopewayError => (isUserError(e) ? e : fail(`${what}: ${errorMessage(e)}`, e))

/** Runs plain code that may throw, failing with a tagged error. */
export const attempt = <A>(what: string, f: () => A): Effect.Effect<A, RopewayError> => Effect.try({ try: f, catch: (e) => asStageError(e, what) })

/** The same for a promise. */
export const attemptPromise = <A>(what: string, f: () => Promise<A>): Effect.Effect<A, RopewayError> =>
  Effect.tryPromise({ try: f, catch: (e) => asStageError(e, what) })
