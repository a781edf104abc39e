/**
 * `bun run workflow [FILE] [--store DIR] [--quiet]`: the same as `ropeway run`. Exit 1 with one error
 * block for an invalid workflow or a failed step; Ctrl-C interrupts cleanly (exit 130).
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import { run } from "./commands/run.ts"
import { UserError } from "../common/errors.ts"

const program = Command.run(run, { version: "0.1.0" }).pipe(
  Effect.catchIf(
    (e): e is UserError => e instanceof UserError,
    (e) =>
      Effect.sync(() => {
        process.stderr.write(`error: ${e.message}\n`)
        process.exitCode = 1
      }),
  ),
  Effect.provide(NodeServices.layer),
)

NodeRuntime.runMain(program)
