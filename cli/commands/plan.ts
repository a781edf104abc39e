/** `ropeway plan [FILE]`: validate a workflow and show its steps, cache keys, hits and what would run. */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { formatPlan, loadWorkflow, planWorkflow } from "../workflow.ts"
import { storeFlag, workflowFile } from "./run.ts"

export const plan = Command.make(
  "plan",
  { file: workflowFile, store: storeFlag, json: Flag.Boolean("json").pipe(Flag.withDescription("print the plan as JSON"), Flag.withDefault(false)) },
  ({ file, store, json }) =>
    loadWorkflow(file).pipe(
      Effect.flatMap((wf) => planWorkflow(wf, { store })),
      Effect.flatMap((p) => Console.log(json ? JSON.stringify(p, null, 2) : formatPlan(p))),
    ),
).pipe(Command.withDescription("Validate a workflow file and show each step's cache key, the cache hits and what would run"))
