/**
 * `bun run ropeway <subcommand>`: the command line. Each subcommand lives in cli/commands/.
 * Errors a user caused print as one line on stderr and exit 1 (cli/render.ts); interrupts (Ctrl-C) exit 130.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import { commands } from "./commands/index.ts"
import { renderErrors } from "./render.ts"

const root = Command.make("ropeway").pipe(
  Command.withDescription("Extend the context window of RoPE language models (LongRoPE) on WGSL kernels"),
  Command.withSubcommands(commands),
)

NodeRuntime.runMain(Command.run(root, { version: "0.1.0" }).pipe(renderErrors, Effect.provide(NodeServices.layer)))
