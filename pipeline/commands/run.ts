/**
 * `ropeway run [FILE]` (also `bun run workflow [FILE]`): validate the workflow file, then run it.
 * Prints progress on stderr and, last, the run folder on stdout. Services the stages need beyond
 * Progress (a GPU, ...) are provided around this command by the CLI.
 */
import { Effect } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { UserError } from "../errors.ts"
import { layerConsole, layerSilent, loadWorkflow, runWorkflow } from "../workflow/index.ts"

export const DEFAULT_WORKFLOW = "workflows/default.yaml"

export const workflowFile = Argument.String("workflow-file").pipe(
  Argument.withDescription("the workflow YAML file"),
  Argument.withDefault(DEFAULT_WORKFLOW),
)
export const storeFlag = Flag.String("store").pipe(
  Flag.withDescription("the run store folder (artifacts, checkpoints, run manifests)"),
  Flag.withDefault("runs"),
)

export const run = Command.make(
  "run",
  {
    file: workflowFile,
    store: storeFlag,
    quiet: Flag.Boolean("quiet").pipe(Flag.withAlias("q"), Flag.withDescription("no progress output"), Flag.withDefault(false)),
  },
  ({ file, store, quiet }) =>
    loadWorkflow(file).pipe(
      Effect.flatMap((wf) => runWorkflow(wf, { store })),
      Effect.provide(quiet ? layerSilent : layerConsole),
      Effect.catchTags({
        WorkflowInvalid: (e) => Effect.fail(new UserError({ message: e.message })),
        RunError: (e) => Effect.fail(new UserError({ message: e.message })),
      }),
      Effect.asVoid,
    ),
).pipe(Command.withDescription("Run a workflow: steps already in the store are reused; the last line is the run folder"))
