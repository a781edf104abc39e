/**
 * `bun run ropeway <subcommand>`: the command line. Each subcommand lives in pipeline/commands/.
 * Errors a user caused print as one line on stderr and exit 1; interrupts (Ctrl-C) exit 130.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Effect } from "effect"
import { Command } from "effect/cli"
import { InputError, UserError, WriteError } from "./errors.ts"
import { commands } from "./commands/index.ts"

const root = Command.make("ropeway").pipe(
  Command.withDescription("Extend the context window of RoPE language models (LongRoPE) on WGSL kernels"),
  Command.withSubcommands(commands),
)

const program = Command.run(root, { version: "0.1.0" }).pipe(
  Effect.catchCause((cause) => {
    const err = Cause.squash(cause)
    if (err instanceof UserError || err instanceof InputError || err instanceof WriteError || (err as { _tag?: string })?._tag === "GpuUnavailable") {
      return Effect.sync(() => {
        process.stderr.write(`error: ${(err as Error).message}\n`)
        process.exitCode = 1
      })
    }
    return Effect.failCause(cause)
  }),
  Effect.provide(NodeServices.layer),
)

NodeRuntime.runMain(program)
