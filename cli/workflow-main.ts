/**
 * `bun run workflow [FILE] [--store DIR] [--quiet]`: the same as `ropeway run`. Exit 1 with one error
 * block for an invalid workflow or a failed step; Ctrl-C interrupts cleanly (exit 130).
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import { run } from "./commands/run.ts"
import { renderErrors } from "./render.ts"

NodeRuntime.runMain(Command.run(run, { version: "0.1.0" }).pipe(renderErrors, Effect.provide(NodeServices.layer)))
