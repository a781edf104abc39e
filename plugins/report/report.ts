/**
 * The run report: report.md plus charts/*.svg and charts/*.png, from metrics.json and (when given) the
 * search logs, factor sets and run manifest. `buildReport` is pure apart from rendering; `writeReport`
 * puts the files in place, charts first and report.md last, each through a temp file and a rename, so a
 * reader never sees a report that links to charts not yet written.
 */
import { existsSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { writeFileAtomic } from "../../common/files.ts"
import { parseMetrics } from "../eval/metrics.ts"
import {
  baselineSeries,
  convergenceSpec,
  factorCurveSpec,
  fmt,
  passkeyGridSpec,
  passkeyLineSpec,
  perplexitySpec,
  type FactorSeries,
  type PasskeyCell,
} from "./charts.ts"
import type { Estimate } from "../eval/intervals.ts"
import { sideBySideSections } from "./compare.ts"
import { accuracyIntervalSpec, estimateText, intervalNote, passkeyCounts, perplexityIntervalSpec, pooledWilson } from "./estimates.ts"
import { loadExtras, type NamedFactorSet, type ReportExtras, type SearchHistory } from "./inputs.ts"
import { retrievalSection } from "./retrieval.ts"
import { tasksSection } from "./tasks.ts"
import {
  code,
  cell,
  num,
  pct,
  ppl,
  type PasskeyRow,
  passkeyMisses,
  passkeyTable,
  perplexityGroups,
  perplexityProtocolNote,
  perplexityTable,
  type PerplexityRow,
  recordTable,
  type RetrievalRow,
  type Row,
  seriesLabel,
  slug,
  table,
  type TaskRow,
  uniq,
} from "./markdown.ts"
import { type ChartRequests, renderChart, type RenderedChart } from "./render.ts"

/** metrics.json as the report reads it (plugins/eval/metrics.ts's Metrics fits; extra fields are kept and shown). */
export interface MetricsInput {
  readonly perplexity: readonly PerplexityRow[]
  readonly passkey: readonly PasskeyRow[]
  /** Absent in files written before retrieval tasks. */
  readonly retrieval?: readonly RetrievalRow[]
  readonly tasks?: readonly TaskRow[]
  readonly short: readonly Row[]
  readonly search: readonly Row[]
}

/** What the report shows of the run's manifest (pipeline/workflow/runner.ts Manifest fits). */
export interface RunInfo {
  readonly workflow?: { readonly name: string; readonly file: string; readonly hash: string }
  readonly seed?: number
  readonly model?: { readonly spec: string; readonly kind: string; readonly hash: string | null } | null
  readonly plugins?: ReadonlyArray<{ readonly name: string; readonly version: string; readonly source: string }>
  readonly adapter?: string | null
  readonly steps?: ReadonlyArray<{
    readonly name: string
    readonly stage: string
    readonly version?: string
    readonly seed?: number
    readonly status?: string
    readonly seconds?: number | null
    readonly key?: string | null
  }>
  /** Where the manifest is, for the reproduce section. */
  readonly manifestPath?: string
  /** The step that made this report, when a stage made it (it cannot see the whole manifest). */
  readonly reportStep?: { readonly name: string; readonly key: string; readonly seed: number; readonly inputs: Readonly<Record<string, string>> }
}

export interface ReportInput {
  readonly metrics: MetricsInput
  readonly extras?: ReportExtras
  readonly run?: RunInfo
  readonly title?: string
}

export interface Report {
  readonly markdown: string
  readonly charts: readonly RenderedChart[]
}


/** Embeds a chart: the SVG inline (scales cleanly), the PNG linked for viewers that do not show SVG. */
const embed = (c: RenderedChart): string => `![${c.title}](charts/${c.name}.svg)\n\n[PNG](charts/${c.name}.png) · [SVG](charts/${c.name}.svg)`

// ---- factor sets -----------------------------------------------------------------------------------

/** A set's factors as one vector (per-layer sets show layer 0; published ones have identical rows). */
const setVector = (f: readonly number[] | readonly (readonly number[])[]): { v: readonly number[]; perLayer: boolean } =>
  Array.isArray(f[0]) ? { v: f[0] as readonly number[], perLayer: true } : { v: f as readonly number[], perLayer: false }

export function factorSetSeries(fs: NamedFactorSet): { series: FactorSeries[]; scale: number; perLayer: boolean } {
  const m = fs.file.model
  const L0 = m.original_max_position_embeddings
  const scale = fs.file.provenance.scale
  let perLayer = false
  const sets = fs.file.sets.map((s) => {
    const { v, perLayer: pl } = setVector(s.factors)
    perLayer ||= pl
    return { name: `${fs.file.provenance.method}, length ≤ ${s.max_length} (s=${fmt(s.scale ?? s.max_length / L0)})`, factors: v }
  })
  const geometry = { rotaryDim: m.rotary_dim, base: m.base, originalLength: L0 }
  return { series: [...sets, ...baselineSeries(geometry, scale)], scale, perLayer }
}

function factorSection(sets: readonly NamedFactorSet[], charts: ChartRequests): string[] {
  if (sets.length === 0) return []
  const out = ["## Factors", ""]
  sets.forEach((fs, k) => {
    const f = fs.file
    const { series, scale, perLayer } = factorSetSeries(fs)
    const p = f.provenance
    out.push(
      `**${fs.name}**: ${code(p.method)} factors${p.run_id === null ? "" : ` from search run ${code(p.run_id)}`}, for lengths ${p.lengths.join(", ")} ` +
        `(scale s = ${fmt(scale)}); model rotary dim ${f.model.rotary_dim}, base ${num(f.model.base)}, original context ${f.model.original_max_position_embeddings}` +
        `${f.start_tokens === undefined ? "" : `, start tokens n̂ = ${f.start_tokens}`}${f.mscale === undefined ? "" : `, attention scale ${typeof f.mscale === "number" ? num(f.mscale) : code(f.mscale)}`}${p.created === undefined ? "" : `; created ${p.created}`}.`,
      "",
      table(
        ["set", "max length", "scale", "λ min", "λ max", "start tokens", "mscale"],
        f.sets.map((s, i) => {
          const { v } = setVector(s.factors)
          return [String(i), String(s.max_length), fmt(s.scale ?? s.max_length / f.model.original_max_position_embeddings), num(Math.min(...v)), num(Math.max(...v)), s.start_tokens === undefined ? "–" : String(s.start_tokens), s.mscale === undefined ? "–" : String(s.mscale)]
        }),
        ["l", "r", "r", "r", "r", "r", "l"],
      ),
      "",
    )
    const name = sets.length === 1 ? "factors" : `factors-${k + 1}-${slug(fs.name.replace(/\.json$/, ""))}`
    const title = `Factors λ_i by dimension vs PI, NTK and YaRN at s = ${fmt(scale)}`
    charts.push({
      name,
      title,
      spec: factorCurveSpec({
        title,
        subtitle: `${fs.name}${perLayer ? " (layer 0 of per-layer factors)" : ""}; rotary dim ${f.model.rotary_dim}, base ${num(f.model.base)}, L0 ${f.model.original_max_position_embeddings}`,
        series,
      }),
    })
    out.push(`{{chart:${name}}}`, "")
  })
  return out
}

// ---- search -------------------------------------------------------------------------------------------

function genomeSummary(g: Readonly<Record<string, unknown>> | undefined): string {
  if (g === undefined) return "–"
  const parts: string[] = []
  const f = g["factors"] ?? g["vector"]
  if (Array.isArray(f) && f.every((x) => typeof x === "number")) parts.push(`${f.length} values in [${num(Math.min(...f))}, ${num(Math.max(...f))}]`)
  if (typeof g["startToken"] === "number") parts.push(`n̂ = ${g["startToken"]}`)
  if (typeof g["attentionScale"] === "number") parts.push(`m = ${num(g["attentionScale"])}`)
  if (typeof g["alpha"] === "number") parts.push(`α = ${num(g["alpha"])}`)
  if (typeof g["beta"] === "number") parts.push(`β = ${num(g["beta"])}`)
  return parts.join(", ") || "–"
}

function searchSection(searches: readonly SearchHistory[], rows: readonly Row[], charts: ChartRequests): string[] {
  if (searches.length === 0 && rows.length === 0) return []
  const out = ["## Search", ""]
  if (searches.length > 0) {
    out.push(
      table(
        ["log", "strategy", "generations", "evaluations", "best fitness", "best individual", "seconds"],
        searches.map((s) => [
          s.name,
          s.strategy,
          String(s.generations),
          `${s.evaluations}${s.fullEvaluations === undefined || s.fullEvaluations === s.evaluations ? "" : ` (${s.fullEvaluations} at full fidelity)`}`,
          s.bestFitness === undefined ? "–" : num(s.bestFitness),
          genomeSummary(s.bestGenome),
          s.seconds === undefined ? "–" : num(s.seconds),
        ]),
        ["l", "l", "r", "r", "r", "l", "r"],
      ),
      "",
      "Fitness is the search's objective (perplexity at the target length unless the search says otherwise); lower is better.",
      "",
    )
    searches.forEach((s, k) => {
      const name = searches.length === 1 ? "search" : `search-${k + 1}-${slug(s.name.replace(/\.json$/, ""))}`
      const title = `Search convergence: ${s.strategy}`
      charts.push({
        name,
        title,
        spec: convergenceSpec({
          title,
          subtitle: `${s.name}: ${s.generations} generations, ${s.evaluations} evaluations${s.bestFitness === undefined ? "" : `, best ${num(s.bestFitness)}`}`,
          population: s.population,
          best: s.best,
        }),
      })
      out.push(`{{chart:${name}}}`, "")
    })
  }
  if (rows.length > 0) out.push("Search results recorded in metrics.json:", "", recordTable(rows, ["step", "method", "model", "length", "best", "evaluations"]), "")
  return out
}

// ---- evaluation --------------------------------------------------------------------------------------

const pplText = (r: PerplexityRow): string => (r.interval === undefined ? ppl(r.value) : estimateText(r.interval, "perplexity"))

function perplexitySection(rows: readonly PerplexityRow[], charts: ChartRequests): string[] {
  const out = ["## Perplexity by length", ""]
  if (rows.length === 0) return [...out, "No perplexity was measured in this run.", ""]
  const models = uniq(rows.map((r) => r.model)).length
  const groups = perplexityGroups(rows)
  for (const g of groups) {
    const name = groups.length === 1 ? "perplexity" : `perplexity-${slug(g.protocol)}`
    const title = `Perplexity by length (protocol: ${g.protocol})`
    const samples = uniq(g.rows.map((r) => r.samples.length))
    const intervals = g.rows.flatMap((r) => (r.interval === undefined ? [] : [r.interval]))
    out.push(`### Protocol ${code(g.protocol)}`, "", perplexityProtocolNote(g), "", perplexityTable(g.rows, pplText), "")
    if (intervals.length > 0) out.push(intervalNote(intervals), "")
    const subtitle = `${samples.join("–")} sample document(s) per point; lower is better${intervals.length === g.rows.length ? "; bars: the interval" : ""}`
    const spec = intervals.length === g.rows.length
      ? perplexityIntervalSpec({ title, subtitle, points: g.rows.map((r) => ({ series: seriesLabel(r, models), length: r.length, estimate: r.interval! })) })
      : perplexitySpec({ title, subtitle, points: g.rows.map((r) => ({ series: seriesLabel(r, models), length: r.length, value: r.value })) })
    charts.push({ name, title, spec })
    out.push(`{{chart:${name}}}`, "")
  }
  return out
}

/** The needle's depth of a passkey row, when the evaluation recorded one (0–1 or a percentage). */
const depthOf = (r: PasskeyRow): number | undefined => {
  const d = r["depth"]
  return typeof d === "number" && Number.isFinite(d) ? d : undefined
}
const depthLabel = (d: number): string => (d <= 1 ? `${Math.round(d * 100)}%` : `${d}%`)

/** Rows of one cell pooled: Σ correct of Σ trials with its Wilson interval (undefined without trials). */
const passkeyEstimate = (rs: readonly PasskeyRow[]): Estimate | undefined =>
  rs.reduce((a, r) => a + r.trials, 0) > 0 ? pooledWilson(rs.map(passkeyCounts), rs.find((r) => r.interval !== undefined)?.interval?.level ?? 0.95) : undefined

/** A heatmap cell: the accuracy over its interval. */
const gridCell = (length: number, row: string, rs: readonly PasskeyRow[]): PasskeyCell => {
  const e = passkeyEstimate(rs)
  const trials = rs.reduce((a, r) => a + r.trials, 0)
  const accuracy = e?.value ?? rs[0]!.accuracy
  return { length, row, accuracy, trials, ...(e === undefined ? {} : { label: `${Math.round(e.value * 100)}%\n[${Math.round(e.lo * 100)}, ${Math.round(e.hi * 100)}]` }) }
}

function passkeySection(rows: readonly PasskeyRow[], charts: ChartRequests): string[] {
  const out = ["## Passkey retrieval", ""]
  if (rows.length === 0) return [...out, "No passkey retrieval was measured in this run.", ""]
  const trials = uniq(rows.map((r) => r.trials))
  const text = (rs: readonly PasskeyRow[]): string => {
    const e = passkeyEstimate(rs)
    return e === undefined ? pct(rs[0]!.accuracy) : estimateText(e, "accuracy")
  }
  out.push(`Accuracy (share of trials whose first generated integer is the passkey), ${trials.join("–")} trials per row; depths pooled in the table.`, "", passkeyTable(rows, text), "")
  const models = uniq(rows.map((r) => r.model)).length
  const series = uniq(rows.map((r) => seriesLabel(r, models)))
  const cellRows = (s: string, L: number) => rows.filter((r) => seriesLabel(r, models) === s && r.length === L)
  const pooled = series.flatMap((s) => uniq(rows.filter((r) => seriesLabel(r, models) === s).map((r) => r.length)).map((L) => ({ series: s, length: L, estimate: passkeyEstimate(cellRows(s, L)) })))
  const estimates = pooled.flatMap((p) => (p.estimate === undefined ? [] : [p.estimate]))
  if (estimates.length > 0) out.push(`${intervalNote(estimates)} A depth grid's cells each have their own interval.`, "")
  const misses = passkeyMisses(rows)
  if (misses !== null) out.push("Misses (key → first integer generated; none: no integer). An answer that differs from its key only at the end (a wrong last digit, one digit too many) found the key and copied it imprecisely; one that shares little with it did not find it.", "", misses, "")
  const withDepth = rows.some((r) => depthOf(r) !== undefined)
  if (withDepth) {
    // one grid per method: depth × length, as in the needle-in-a-haystack plots
    for (const s of series) {
      const rs = rows.filter((r) => seriesLabel(r, models) === s && depthOf(r) !== undefined)
      const depths = uniq(rs.map((r) => depthOf(r)!)).sort((a, b) => a - b)
      const name = `passkey-grid-${slug(s)}`
      const title = `Passkey accuracy by length and depth: ${s}`
      charts.push({
        name,
        title,
        spec: passkeyGridSpec({
          title,
          subtitle: `${trials.join("–")} trials per cell; brackets: the interval, percent`,
          rowTitle: "passkey depth",
          rowOrder: depths.map(depthLabel),
          cells: rs.map((r) => gridCell(r.length, depthLabel(depthOf(r)!), [r])),
        }),
      })
      out.push(`{{chart:${name}}}`, "")
    }
  } else {
    const title = "Passkey accuracy by length and method"
    charts.push({
      name: "passkey-grid",
      title,
      spec: passkeyGridSpec({
        title, subtitle: `${trials.join("–")} trials per cell; depths pooled (not recorded per cell); brackets: the interval, percent`, rowTitle: "method", rowOrder: series,
        cells: pooled.map((p) => gridCell(p.length, p.series, cellRows(p.series, p.length))),
      }),
    })
    out.push(`{{chart:passkey-grid}}`, "")
  }
  const title = "Passkey accuracy by length"
  const subtitle = `${trials.join("–")} trials per row, depths pooled`
  const spec = estimates.length === pooled.length
    ? accuracyIntervalSpec({ title, subtitle: `${subtitle}; bars: the interval`, yTitle: "passkey retrieval accuracy", points: pooled.map((p) => ({ series: p.series, length: p.length, estimate: p.estimate! })) })
    : passkeyLineSpec({ title, subtitle, points: pooled.map((p) => ({ series: p.series, length: p.length, accuracy: cellRows(p.series, p.length)[0]!.accuracy })) })
  charts.push({ name: "passkey", title, spec })
  out.push(`{{chart:passkey}}`, "")
  return out
}

const isEstimate = (v: unknown): v is Estimate => typeof v === "object" && v !== null && typeof (v as Estimate).lo === "number" && typeof (v as Estimate).n === "number"

function shortSection(rows: readonly Row[]): string[] {
  const out = ["## Short-context quality", ""]
  if (rows.length === 0) return [...out, "No short-context measurement in this run.", ""]
  out.push("Quality at and below the original context (the extension should not cost it):", "")
  // the evaluate stage's rows: perplexity and KL with their intervals; other shapes as they are
  const staged = rows.every((r) => typeof r["perplexity"] === "number" && typeof r["kl"] === "number")
  if (!staged) return [...out, recordTable(rows), ""]
  const est = (r: Row, k: string, v: number, style: "perplexity" | "kl") => {
    const e = r[k]
    if (!isEstimate(e)) return style === "perplexity" ? ppl(v) : num(v)
    return style === "perplexity" ? estimateText(e, "perplexity") : `${num(e.value)} [${num(e.lo)}, ${num(e.hi)}] (n=${e.n})`
  }
  const models = uniq(rows.map((r) => String(r["model"]))).length
  const intervals = rows.flatMap((r) => [r["interval"], r["klInterval"]].filter(isEstimate))
  return [
    ...out,
    table(
      ["method", "length", "perplexity", "KL to plain RoPE (nats/token)", "scale"],
      rows.map((r) => [
        cell(seriesLabel({ method: String(r["method"]), model: String(r["model"]) }, models)), String(r["length"]),
        est(r, "interval", r["perplexity"] as number, "perplexity"), est(r, "klInterval", r["kl"] as number, "kl"), typeof r["scale"] === "number" ? num(r["scale"]) : "–",
      ]),
    ),
    "",
    ...(intervals.length > 0 ? [intervalNote(intervals), ""] : []),
  ]
}

// ---- run, reproduce ------------------------------------------------------------------------------------

function overview(input: ReportInput): string[] {
  const m = input.metrics
  const out: string[] = []
  const run = input.run
  const all = [...m.perplexity, ...m.passkey] as ReadonlyArray<{ model: string; method: string; length: number }>
  const models = uniq(all.map((r) => r.model))
  const methods = uniq(all.map((r) => r.method))
  const lengths = uniq(all.map((r) => r.length)).sort((a, b) => a - b)
  if (run?.workflow !== undefined) out.push(`- **Workflow**: ${code(run.workflow.name)} (${code(run.workflow.file)}, sha256 ${run.workflow.hash.replace(/^sha256:/, "").slice(0, 16)}…)`)
  if (run?.model != null) out.push(`- **Model**: ${code(run.model.spec)} (${run.model.kind}${run.model.hash === null ? "" : `, sha256 ${run.model.hash.replace(/^sha256:/, "").slice(0, 16)}…`})`)
  if (run?.seed !== undefined) out.push(`- **Seed**: ${run.seed}`)
  if (run?.adapter != null) out.push(`- **Device**: ${run.adapter}`)
  if (models.length > 0) out.push(`- **Checkpoints evaluated**: ${models.map(code).join(", ")} (\`base\` = the model as given; others are the steps that made them)`)
  const onTop = methods.some((x) => x.startsWith("model+")) ? "; `model+pi`/`model+yarn` = PI/YaRN on top of the checkpoint's longest factor set, at length / its max_length" : ""
  if (methods.length > 0) out.push(`- **RoPE settings compared**: ${methods.map(code).join(", ")} (\`model\` = the checkpoint's own table; \`none\` = plain RoPE; \`pi\`/\`ntk\`/\`yarn\` = baselines at the same scale${onTop})`)
  if (lengths.length > 0) out.push(`- **Lengths**: ${lengths.join(", ")} tokens`)
  const ropes = uniq(m.perplexity.filter((r) => r.method === "model").map((r) => `${r.length}: ${String(r["rope"] ?? "")}`)).filter((s) => !s.endsWith(": "))
  if (ropes.length > 0) out.push(`- **Model's RoPE table by length**: ${ropes.join("; ")}`)
  const data = uniq(m.perplexity.map((r) => r["data"]).filter((d): d is string => typeof d === "string"))
  if (data.length > 0) out.push(`- **Evaluation data**: ${data.join("; ")}`)
  out.push(...headlines(m))
  const searches = input.extras?.searches ?? []
  for (const s of searches) {
    out.push(`- **Search** (${s.strategy}, ${s.name}): best fitness ${s.bestFitness === undefined ? "–" : num(s.bestFitness)} after ${s.evaluations} evaluations in ${s.generations} generations`)
  }
  return out
}

/**
 * The numbers a reader looks for first: at the longest length of each protocol, every method's perplexity
 * (best first), and passkey accuracy at the longest length.
 */
function headlines(m: MetricsInput): string[] {
  const out: string[] = []
  const models = uniq(m.perplexity.map((r) => r.model)).length
  for (const g of perplexityGroups(m.perplexity)) {
    const longest = Math.max(...g.rows.map((r) => r.length))
    const at = [...g.rows.filter((r) => r.length === longest)].sort((a, b) => a.value - b.value)
    out.push(`- **Perplexity at ${longest} tokens** (${g.protocol}): ${at.map((r) => `${seriesLabel(r, models)} ${pplText(r)}`).join(", ")}`)
  }
  if (m.passkey.length > 0) {
    const pm = uniq(m.passkey.map((r) => r.model)).length
    const longest = Math.max(...m.passkey.map((r) => r.length))
    const rows = m.passkey.filter((r) => r.length === longest)
    const acc = uniq(rows.map((r) => seriesLabel(r, pm))).map((s) => {
      const rs = rows.filter((r) => seriesLabel(r, pm) === s)
      const e = passkeyEstimate(rs)
      return `${s} ${e === undefined ? pct(rs[0]!.accuracy) : estimateText(e, "accuracy")}`
    })
    out.push(`- **Passkey accuracy at ${longest} tokens**: ${acc.join(", ")}`)
  }
  return out
}

function stepsSection(run: RunInfo | undefined): string[] {
  if (run?.steps === undefined || run.steps.length === 0) return []
  return [
    "## Steps",
    "",
    table(
      ["step", "stage", "version", "status", "seconds", "cache key"],
      run.steps.map((s) => [s.name, s.stage, s.version ?? "–", s.status ?? "–", s.seconds == null ? "–" : s.seconds.toFixed(1), s.key == null ? "–" : code(s.key.slice(0, 12))]),
      ["l", "l", "l", "l", "r", "l"],
    ),
    "",
  ]
}

function reproduceSection(run: RunInfo | undefined): string[] {
  const out = ["## How to reproduce", ""]
  if (run?.workflow !== undefined) {
    out.push(`Run the same workflow file with the same seed; every step whose inputs and params hash the same is reused from the store:`, "", "```sh", `bun run workflow ${run.workflow.file}`, "```", "")
  }
  out.push(
    `The run's manifest${run?.manifestPath === undefined ? " (manifest.json in the run folder)" : ` (${code(run.manifestPath)})`} records the workflow file and its hash, ` +
      "the seed, the resolved plugin versions, every step's params, input hashes and cache key: that is all a re-run needs. " +
      "Each number in metrics.json records its protocol, samples and RoPE table beside it.",
    "",
  )
  if (run?.plugins !== undefined && run.plugins.length > 0) out.push(`Plugins: ${run.plugins.map((p) => `${p.name}@${p.version} (${p.source})`).join(", ")}.`, "")
  if (run?.reportStep !== undefined) {
    const r = run.reportStep
    out.push(`This report was made by step ${code(r.name)} (cache key ${code(r.key.slice(0, 12))}, seed ${r.seed}) from: ${Object.entries(r.inputs).map(([k, v]) => `${k} = ${code(v)}`).join(", ")}.`, "")
  }
  return out
}

/** Builds the markdown and renders every chart. */
export async function buildReport(input: ReportInput): Promise<Report> {
  const m = input.metrics
  const specs: ChartRequests = []
  const body = [
    `# ${input.title ?? (input.run?.workflow === undefined ? "ropeway run report" : `ropeway run report: ${input.run.workflow.name}`)}`,
    "",
    ...overview(input),
    "",
    ...stepsSection(input.run),
    ...searchSection(input.extras?.searches ?? [], m.search, specs),
    ...factorSection(input.extras?.factorSets ?? [], specs),
    ...sideBySideSections(m.perplexity, m.passkey, specs),
    ...perplexitySection(m.perplexity, specs),
    ...passkeySection(m.passkey, specs),
    ...retrievalSection(m.retrieval ?? [], specs),
    ...tasksSection(m.tasks ?? []),
    ...shortSection(m.short),
    ...reproduceSection(input.run),
  ].join("\n")
  const charts: RenderedChart[] = []
  for (const s of specs) charts.push(await renderChart(s.name, s.title, s.spec)) // one at a time: vega views are not light
  const byName = new Map(charts.map((c) => [c.name, c]))
  const markdown = body.replace(/\{\{chart:([^}]+)\}\}/g, (_, n: string) => embed(byName.get(n)!))
  return { markdown: markdown.replace(/\n{3,}/g, "\n\n").trimEnd() + "\n", charts }
}

/** Writes `<dir>/charts/<name>.svg|.png`, then `<dir>/report.md`. Returns the report's path. */
export function writeReport(dir: string, report: Report): string {
  for (const c of report.charts) {
    writeFileAtomic(join(dir, "charts", `${c.name}.svg`), c.svg)
    writeFileAtomic(join(dir, "charts", `${c.name}.png`), c.png)
  }
  const path = join(dir, "report.md")
  writeFileAtomic(path, report.markdown)
  return path
}

/** What writeRunReport needs of a manifest: RunInfo plus the steps' outputs. */
export interface ManifestLike extends RunInfo {
  readonly steps: ReadonlyArray<NonNullable<RunInfo["steps"]>[number] & { readonly outputs: Readonly<Record<string, { readonly kind: string; readonly path: string }>> }>
}

/** Output kinds that never hold logs or factor sets (and may be large): not scanned. */
const SKIP_KINDS = new Set(["model", "checkpoint", "metrics", "report", "export"])

/**
 * After a run: reads `<runDir>/metrics.json` and every search log / factor set among the steps' outputs,
 * and writes `<runDir>/report.md` with `<runDir>/charts/`. `metrics` is the validated metrics.json
 * (plugins/eval/metrics.ts readMetrics), passed in so this module does not fix its schema.
 */
export async function writeRunReport(runDir: string, manifest: ManifestLike, metrics: MetricsInput): Promise<string> {
  const paths = manifest.steps.flatMap((s) =>
    Object.values(s.outputs)
      .filter((o) => !SKIP_KINDS.has(o.kind) && existsSync(o.path) && (statSync(o.path).isDirectory() || statSync(o.path).size < 64 << 20))
      .map((o) => ({ path: o.path, label: s.name })),
  )
  const extras = loadExtras(paths, { strict: false })
  const report = await buildReport({ metrics, extras, run: { ...manifest, manifestPath: join(runDir, "manifest.json") } })
  return writeReport(runDir, report)
}

/**
 * Reads metrics.json: validated by the metrics schema, but the report keeps the file's own objects, so
 * fields the schema does not name (a passkey row's `depth`, a short-context row's KL) still show.
 */
export function readMetricsForReport(path: string): MetricsInput {
  const raw: unknown = JSON.parse(readFileSync(path, "utf8"))
  parseMetrics(raw, path)
  return raw as MetricsInput
}

/**
 * After a run (next to `writeRunMetrics`): `<runDir>/report.md` and `<runDir>/charts/` from the run's
 * merged metrics.json, its manifest, and the search logs / factor sets among the steps' outputs.
 * Returns the report's path, or undefined when the run measured nothing (no metrics.json).
 */
export async function writeRunReportFromDir(runDir: string, manifest: ManifestLike): Promise<string | undefined> {
  const path = join(runDir, "metrics.json")
  if (!existsSync(path)) return undefined
  return writeRunReport(runDir, manifest, readMetricsForReport(path))
}
