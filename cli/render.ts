/**
 * The one place failures reach the user: a tagged error a user can act on (common/errors.ts, an invalid
 * workflow, a failed run, a cluster evaluation) prints as `error: <message>` and exits 1; an interrupt
 * exits 130 (NodeRuntime); anything else is a bug and keeps its trace.
 */
import { Cause, Effect } from "effect"
import { isUserError } from "../common/errors.ts"

const ENGINE_TAGS = new Set(["WorkflowInvalid", "RunError", "EvaluationFailed"])

export const isRendered = (e: unknown): e is { readonly message: string } =>
  isUserError(e) || (typeof e === "object" && e !== null && ENGINE_TAGS.has((e as { _tag?: unknown })._tag as string))

export const renderErrors = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A | void, E, R> =>
  self.pipe(
    Effect.catchCause((cause) => {
      const err = Cause.squash(cause)
      if (Cause.hasInterruptsOnly(cause) || !isRendered(err)) return Effect.failCause(cause)
      return Effect.sync(() => {
        process.stderr.write(`error: ${err.message}\n`)
        process.exitCode = 1
      })
    }),
  )
