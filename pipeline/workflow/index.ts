/**
 * The workflow engine's public API: stages, plugins, workflow files, plan, runner, progress.
 *
 *   export const double = defineStage({
 *     name: "double", version: "1",
 *     params: Schema.Struct({ times: Schema.Int }),
 *     inputs: { x: "number" }, outputs: { out: "number" },
 *     run: (ctx) => Effect.gen(function* () {                 // ctx: params, seed, inputs, outputs, checkpointDir, progress
 *       const x = Number(readFileSync(ctx.inputs.x, "utf8"))
 *       writeFileSync(ctx.outputs.out, `${x * 2 ** ctx.params.times}`)
 *       yield* ctx.progress.report(1)
 *     }),
 *   })
 *   export default definePlugin({ name: "my-plugin", version: "1.0.0", stages: [double] })
 *
 *   // the engine has no built-ins: hand them in (cli/workflow.ts's loadWorkflow does, with ropeway's)
 *   const wf = yield* loadWorkflow("workflows/x.yaml", { builtins })   // WorkflowInvalid with positioned diagnostics
 *   console.log(formatPlan(yield* planWorkflow(wf, { store: "runs" })))
 *   const { runDir, manifest } = yield* runWorkflow(wf, { store: "runs" })  // needs Progress (layerConsole)
 */
export {
  type AnyStage, type ArtifactKind, defineStage, type Json, type ParamIssue, type ParamPath, type Stage, type StageContext, StageError, type StageProgress,
  type ValidateContext,
} from "./stage.ts"
export {
  type AfterRun, type Contribution, type Dataset, definePlugin, type FitnessFunction, isPlugin, type Kind, KINDS, kindLabel, type ModelContribution,
  type ModelFamilyContribution, type Named, type Plugin, type PluginDefinition, type PluginInfo, PluginRegistry, Registry, type RopeMethodContribution,
  type SearchStrategy, type WorkflowSetting,
} from "./plugin.ts"
export { type Diagnostic, formatDiagnostic, WorkflowInvalid } from "./diagnostics.ts"
export { type ExternalFile, type InputSource, loadWorkflow, type LoadOptions, MODEL_STEP, type ModelRef, type ResolvedStep, resolvePackage, type Workflow } from "./loader.ts"
export { AdapterInfo, type Manifest, RunError, type RunOptions, type RunResult, runWorkflow, type StepManifest } from "./runner.ts"
export { formatPlan, type Plan, type PlanStatus, type PlanStep, planWorkflow } from "./plan.ts"
export { layerCollect, layerConsole, layerSilent, layerWarnings, makeConsoleProgress, Progress, type ProgressEvent } from "./progress.ts"
export { cacheKey, type EntryMeta, removeTree, RunStore } from "./store.ts"
export { checkEntry, type EntryCheck, type Mismatch, verifyStore } from "./verify.ts"
export { collectGarbage, formatBytes } from "./gc.ts"
export { listRuns } from "./runs.ts"
export { canonicalJson, hashPath } from "../../common/hash.ts"
