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

/** `file: problem`, the shape every input error takes. */
export const inputError = (file: string, problem: string): InputError => new InputError(`${file}: ${problem}`)
