/**
 * Errors a user can act on. The CLI prints `error: <message>` on one line and exits 1, with no stack trace;
 * the message names the file (or flag) and what was expected.
 */
import { Data } from "effect"

export class UserError extends Data.TaggedError("UserError")<{ readonly message: string }> {}

/** Throwable form for plain (non-Effect) code such as loaders; the CLI turns it into a one-line error. */
export class InputError extends Error {
  override readonly name = "InputError"
}

/** Characters of a problem shown: an error that echoes a hostile file's values stays one readable line. */
const MAX_PROBLEM = 600

/** One line of at most MAX_PROBLEM characters: line breaks and other control characters escaped, the rest cut. */
export const oneLine = (text: string): string => {
  const s = text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => (c === "\n" ? "\\n" : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`))
  return s.length <= MAX_PROBLEM ? s : `${s.slice(0, MAX_PROBLEM)}… (${s.length - MAX_PROBLEM} more characters)`
}

/** `file: problem`, the shape every input error takes, on one line. */
export const inputError = (file: string, problem: string): InputError => new InputError(`${file}: ${oneLine(problem)}`)

/** A file that could not be written (disk full, no permission, ...): names the file and the reason. */
export class WriteError extends Error {
  override readonly name = "WriteError"
}

const WRITE_REASONS: Readonly<Record<string, string>> = {
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EFBIG: "file too large for this file system or process limit",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "read-only file system",
  EIO: "input/output error",
}

/** `path: cannot write: <reason> (<code>)`; a WriteError passes through unchanged. */
export const writeError = (path: string, cause: unknown): WriteError => {
  if (cause instanceof WriteError) return cause
  const code = (cause as NodeJS.ErrnoException | undefined)?.code
  const reason = code !== undefined && WRITE_REASONS[code] !== undefined ? `${WRITE_REASONS[code]} (${code})` : cause instanceof Error ? cause.message : String(cause)
  return new WriteError(`${path}: cannot write: ${reason}`, { cause })
}
