/**
 * `report` and `report-search`: the run report (report.md, charts/*.svg, charts/*.png) as a step's output
 * folder, from a metrics.json artifact and, for `report-search`, a search step's log folder and factor set.
 * (Step inputs are all required, so the optional ones are a second stage, as `search-factors` does.)
 *
 * A stage sees only its inputs, not the run's manifest; the run-level report (`<run>/report.md` from the
 * merged metrics.json and the manifest) is the report plugin's after-run action (stages/builtins.ts).
 */
import { Effect, Schema } from "effect"
import { defineStage, type StageContext, StageError } from "../pipeline/workflow/stage.ts"
import { loadExtras, type ReportExtras } from "../plugins/report/inputs.ts"
import { buildReport, readMetricsForReport, writeReport } from "../plugins/report/report.ts"
import { METRICS_KIND } from "../plugins/eval/metrics.ts"

export const REPORT_KIND = "report"

export const ReportParams = Schema.Struct({
  /** The report's heading; default "ropeway run report". */
  title: Schema.optionalKey(Schema.NonEmptyString),
})
export type ReportParams = typeof ReportParams.Type

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e))
const attempt = <A>(what: string, f: () => A): Effect.Effect<A, StageError> =>
  Effect.try({ try: f, catch: (e) => new StageError({ message: `${what}: ${errText(e)}`, cause: e }) })

function runReport(ctx: StageContext<ReportParams, string, "report">, extraInputs: readonly string[]) {
  return Effect.gen(function* () {
    const inputs = ctx.inputs as Readonly<Record<string, string>>
    const metricsPath = inputs["metrics"]
    if (metricsPath === undefined) return yield* Effect.fail(new StageError({ message: "report: input `metrics` (a metrics.json) is required" }))
    const metrics = yield* attempt("metrics.json", () => readMetricsForReport(metricsPath))
    const paths = extraInputs.map((k) => inputs[k]).filter((p): p is string => p !== undefined)
    const extras: ReportExtras = yield* attempt("search log / factors", () => loadExtras(paths))
    yield* ctx.progress.report(0.1, "rendering charts")
    const report = yield* Effect.tryPromise({
      try: () =>
        buildReport({
          metrics,
          extras,
          run: { seed: ctx.seed, reportStep: { name: ctx.step, key: ctx.key, seed: ctx.seed, inputs } },
          ...(ctx.params.title === undefined ? {} : { title: ctx.params.title }),
        }),
      catch: (e) => new StageError({ message: `report: rendering failed: ${errText(e)}`, cause: e }),
    })
    yield* attempt("writing the report", () => writeReport(ctx.outputs.report, report))
    yield* ctx.progress.log(`report.md with ${report.charts.length} chart(s)`)
    return {
      charts: report.charts.map((c) => c.name), perplexity: metrics.perplexity.length, passkey: metrics.passkey.length,
      retrieval: metrics.retrieval?.length ?? 0, tasks: metrics.tasks?.length ?? 0, searches: extras.searches.length,
    }
  })
}

const description =
  "report.md with charts (SVG and PNG): perplexity by length per method and protocol, passkey accuracy, retrieval tasks (depth × length heatmaps), multiple-choice tasks, short-context table, every number with its interval; evaluations marked \`sideBySide\` laid side by side"

export const reportStage = defineStage({
  name: "report",
  // 2: intervals, retrieval and multiple-choice sections, side-by-side groups
  version: "2",
  description,
  params: ReportParams,
  inputs: { metrics: METRICS_KIND },
  outputs: { report: REPORT_KIND },
  run: (ctx) => runReport(ctx, []),
})

export const reportSearchStage = defineStage({
  name: "report-search",
  version: "2",
  description: `${description}; plus search convergence and the factor curves against PI/NTK/YaRN`,
  params: ReportParams,
  inputs: { metrics: METRICS_KIND, log: "search-log", factors: "rope-factors" },
  outputs: { report: REPORT_KIND },
  run: (ctx) => runReport(ctx, ["log", "factors"]),
})
