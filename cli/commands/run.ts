/**
 * `ropeway run [FILE]` (also `bun run workflow [FILE]`): validate the workflow file, then run it.
 * Prints progress on stderr and, last, the run folder on stdout. Services the stages need beyond
 * Progress (a GPU, ...) are provided around this command by the CLI.
 */
import { Effect } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { acquireRuntime, describeAdapter, Gpu } from "../../kernels/device.ts"
import { type AfterRun, AdapterInfo, layerConsole, layerWarnings, loadWorkflow, type RunResult, runWorkflow, type Workflow } from "../workflow.ts"

export const DEFAULT_WORKFLOW = "workflows/default.yaml"

export const workflowFile = Argument.String("workflow-file").pipe(
  Argument.withDescription("the workflow YAML file"),
  Argument.withDefault(DEFAULT_WORKFLOW),
)
export const storeFlag = Flag.String("store").pipe(
  Flag.withDescription("the run store folder (artifacts, checkpoints, run manifests)"),
  Flag.withDefault("runs"),
)

/**
 * One GPU device for the whole run (Gpu) and its description for the manifest (AdapterInfo). Without a
 * usable adapter the run still starts: steps that need no GPU run, and a stage that needs one acquires it
 * itself and fails saying why.
 */
export const provideGpu = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.scoped(
    Effect.gen(function* () {
      const rt = yield* Effect.acquireRelease(
        Effect.promise(() => acquireRuntime().catch(() => undefined)),
        (r) => Effect.sync(() => r?.destroy()),
      )
      if (rt === undefined) return yield* self
      return yield* self.pipe(Effect.provideService(Gpu, rt), Effect.provideService(AdapterInfo, { adapter: describeAdapter(rt.adapter) }))
    }),
  )

/**
 * The plugins' after-run actions, in registration order (the built-ins: `<run>/metrics.json`, every step's
 * metrics merged, then `<run>/report.md`); the steps' own files stay in the store. A failure is a warning:
 * the run itself succeeded.
 */
export const afterRun = (wf: Workflow, r: RunResult) =>
  Effect.promise(async () => {
    for (const a of wf.registry.all("afterRun") as AfterRun[]) {
      try {
        await a.run(r.runDir, r.manifest)
      } catch (e) {
        process.stderr.write(`warning: ${r.runDir}: ${a.name} failed: ${e instanceof Error ? e.message : String(e)}\n`)
      }
    }
  })

export const run = Command.make(
  "run",
  {
    file: workflowFile,
    store: storeFlag,
    quiet: Flag.Boolean("quiet").pipe(Flag.withAlias("q"), Flag.withDescription("no progress output (warnings still print)"), Flag.withDefault(false)),
  },
  ({ file, store, quiet }) =>
    loadWorkflow(file).pipe(
      Effect.flatMap((wf) => provideGpu(runWorkflow(wf, { store })).pipe(Effect.tap((r) => afterRun(wf, r)))),
      Effect.provide(quiet ? layerWarnings : layerConsole),
      Effect.asVoid,
    ),
).pipe(Command.withDescription("Run a workflow: steps already in the store are reused; the last line is the run folder"))
