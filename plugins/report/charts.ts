/**
 * Vega-Lite specs for the run report, data inline. Each builder takes plain rows (no file formats), so
 * the report, the `rope --plot` command and tests share them. Titles and axis labels name units and the
 * scale, since a chart may be looked at without the report around it.
 */
import { ntkFactors, piFactors, type RopeGeometry, yarnFactors } from "../rope/factors.ts"
import { CHART_CONFIG, VL_SCHEMA, type VlSpec } from "./render.ts"

const WIDTH = 520
const HEIGHT = 300

/** Greedy word wrap: a long subtitle would otherwise widen the whole chart. */
export function wrap(text: string, width = 95): string[] {
  const lines: string[] = []
  let line = ""
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line)
      line = word
    } else line = line === "" ? word : `${line} ${word}`
  }
  if (line !== "") lines.push(line)
  return lines
}

const base = (title: string, subtitle?: string): VlSpec => ({
  $schema: VL_SCHEMA,
  title: subtitle === undefined ? { text: title } : { text: title, subtitle: wrap(subtitle) },
  width: WIDTH,
  height: HEIGHT,
  config: CHART_CONFIG,
})

/** Shortest decimal for labels: 4 → "4", 2.5 → "2.5", 1/3 → "0.333". */
export const fmt = (x: number): string => (Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(3))))

// ---- (a) factor curves ---------------------------------------------------------------------------

export interface FactorSeries {
  readonly name: string
  readonly factors: ArrayLike<number>
  /** Baselines are drawn dashed, so the searched/effective curves stand out. */
  readonly baseline?: boolean
}

/** PI, NTK and YaRN divisors at scale s for a model's geometry (the references a searched curve is read against). */
export function baselineSeries(g: RopeGeometry, s: number): FactorSeries[] {
  return [
    { name: `PI (s=${fmt(s)})`, factors: piFactors(g, s), baseline: true },
    { name: `NTK (s=${fmt(s)})`, factors: ntkFactors(g, s), baseline: true },
    { name: `YaRN (s=${fmt(s)})`, factors: yarnFactors(g, s), baseline: true },
  ]
}

/** λ_i against dimension index i, log y; one line per series, baselines dashed. */
export function factorCurveSpec(opts: { readonly title: string; readonly subtitle?: string; readonly series: readonly FactorSeries[] }): VlSpec {
  const dashed = opts.series.some((s) => s.baseline === true) ? "dashed: reference methods" : undefined
  const subtitle = [opts.subtitle, dashed].filter((x) => x !== undefined).join("; ")
  const values = opts.series.flatMap((s) =>
    Array.from(s.factors, (f, i) => ({ i, factor: f, series: s.name, kind: s.baseline === true ? "baseline" : "factors" })),
  )
  return {
    ...base(opts.title, subtitle === "" ? undefined : subtitle),
    data: { values },
    mark: { type: "line", point: { size: 18 }, strokeWidth: 2 },
    encoding: {
      x: { field: "i", type: "quantitative", title: "frequency pair i (0 = highest frequency)", scale: { nice: false } },
      y: { field: "factor", type: "quantitative", title: "divisor λ_i = θ_i / θ'_i (log)", scale: { type: "log" } },
      color: { field: "series", type: "nominal", title: "factors", sort: opts.series.map((s) => s.name) },
      // the legend would draw dashes as dots; the subtitle says which lines are dashed
      strokeDash: { field: "kind", type: "nominal", legend: null, scale: { domain: ["factors", "baseline"], range: [[1, 0], [6, 3]] } },
    },
  }
}

// ---- (b) search convergence ------------------------------------------------------------------------

export interface ConvergencePoint {
  /** Fitness evaluations done when this population was measured. */
  readonly evaluations: number
  readonly generation: number
  readonly fitness: number
}

/** Fitness values that mean "failed" (WORST = Number.MAX_VALUE, inf, NaN) would flatten the axis. */
export const plottableFitness = (f: number): boolean => Number.isFinite(f) && Math.abs(f) < 1e30

/**
 * Best fitness so far (line) against evaluations, over each generation's population (grey points and a
 * min–max rule per generation, so the spread is visible). Log y: perplexities span decades early on.
 */
export function convergenceSpec(opts: {
  readonly title: string
  readonly subtitle?: string
  readonly population: readonly ConvergencePoint[]
  readonly best: ReadonlyArray<{ readonly evaluations: number; readonly fitness: number }>
  readonly fitnessLabel?: string
}): VlSpec {
  const pop = opts.population.filter((p) => plottableFitness(p.fitness) && p.fitness > 0)
  const best = opts.best.filter((p) => plottableFitness(p.fitness) && p.fitness > 0)
  const spread = new Map<number, { evaluations: number; generation: number; lo: number; hi: number }>()
  for (const p of pop) {
    const s = spread.get(p.generation)
    if (s === undefined) spread.set(p.generation, { evaluations: p.evaluations, generation: p.generation, lo: p.fitness, hi: p.fitness })
    else spread.set(p.generation, { ...s, lo: Math.min(s.lo, p.fitness), hi: Math.max(s.hi, p.fitness) })
  }
  const values = [
    ...pop.map((p) => ({ layer: "population", evaluations: p.evaluations, fitness: p.fitness, series: "population (each generation)" })),
    ...[...spread.values()].map((s) => ({ layer: "spread", evaluations: s.evaluations, lo: s.lo, hi: s.hi, series: "population (each generation)" })),
    ...best.map((b) => ({ layer: "best", evaluations: b.evaluations, fitness: b.fitness, series: "best so far" })),
  ]
  const yTitle = `${opts.fitnessLabel ?? "fitness (perplexity)"}, log` // short: a title longer than the plot pads it
  const color = {
    field: "series",
    type: "nominal",
    title: null,
    scale: { domain: ["best so far", "population (each generation)"], range: ["#d62728", "#9e9e9e"] },
  }
  const x = { field: "evaluations", type: "quantitative", title: "fitness evaluations" }
  return {
    ...base(opts.title, [opts.subtitle, "lower is better"].filter((x) => x !== undefined).join("; ")),
    data: { values },
    layer: [
      {
        transform: [{ filter: "datum.layer === 'spread'" }],
        mark: { type: "rule", strokeWidth: 1.5, opacity: 0.6 },
        encoding: { x, y: { field: "lo", type: "quantitative", scale: { type: "log", nice: false, padding: 10 }, title: yTitle }, y2: { field: "hi" }, color },
      },
      {
        transform: [{ filter: "datum.layer === 'population'" }],
        mark: { type: "point", filled: true, size: 22, opacity: 0.55 },
        encoding: { x, y: { field: "fitness", type: "quantitative", scale: { type: "log", nice: false, padding: 10 }, title: yTitle }, color },
      },
      {
        transform: [{ filter: "datum.layer === 'best'" }],
        mark: { type: "line", interpolate: "step-after", strokeWidth: 2.5, point: { size: 30 } },
        encoding: { x, y: { field: "fitness", type: "quantitative", scale: { type: "log", nice: false, padding: 10 }, title: yTitle }, color },
      },
    ],
  }
}

/** Known RoPE settings keep one colour in every chart (the extended model stands out; plain RoPE is grey). */
const METHOD_COLORS: Readonly<Record<string, string>> = {
  model: "#1f77b4",
  longrope: "#1f77b4",
  none: "#7f7f7f",
  pi: "#ff7f0e",
  linear: "#ff7f0e",
  ntk: "#d62728",
  yarn: "#17becf",
}
const OTHER_COLORS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a"]

/** A colour scale for series named "method" or "method (checkpoint)". */
export function methodColorScale(series: readonly string[]): { domain: string[]; range: string[] } {
  const domain = [...new Set(series)]
  let k = 0
  const range = domain.map((s) => {
    const known = METHOD_COLORS[s.replace(/ \(.*\)$/, "")]
    // a second checkpoint of the same method must not share its colour
    return known !== undefined && domain.filter((d) => METHOD_COLORS[d.replace(/ \(.*\)$/, "")] === known).length === 1 ? known : OTHER_COLORS[k++ % OTHER_COLORS.length]!
  })
  return { domain, range }
}

// ---- (c) perplexity by length ------------------------------------------------------------------------

export interface PerplexityPoint {
  readonly series: string
  readonly length: number
  readonly value: number
}

/** One line per method against length: log2 x with a tick at each length measured; `y` is the value's encoding. */
function lengthLinesSpec(
  opts: { readonly title: string; readonly subtitle?: string; readonly points: ReadonlyArray<{ readonly series: string; readonly length: number }> },
  xTitle: string,
  y: Record<string, unknown>,
): VlSpec {
  const lengths = [...new Set(opts.points.map((p) => p.length))].sort((a, b) => a - b)
  return {
    ...base(opts.title, opts.subtitle),
    data: { values: opts.points.map((p) => ({ ...p })) },
    mark: { type: "line", point: { size: 40 }, strokeWidth: 2 },
    encoding: {
      x: {
        field: "length",
        type: "quantitative",
        title: xTitle,
        scale: { type: "log", base: 2, nice: false, ...(lengths.length > 1 ? { domain: [lengths[0], lengths[lengths.length - 1]] } : {}) },
        axis: { values: lengths, format: "d" },
      },
      y,
      color: { field: "series", type: "nominal", title: "method", scale: methodColorScale(opts.points.map((p) => p.series)) },
    },
  }
}

/** Perplexity against evaluation length: log2 x, log y, one line per method. */
export function perplexitySpec(opts: { readonly title: string; readonly subtitle?: string; readonly points: readonly PerplexityPoint[] }): VlSpec {
  return lengthLinesSpec(
    opts,
    "evaluation length (tokens, log2)",
    // no decade rounding: 400 vs 900 would otherwise sit in a corner of a 100–10,000 axis
    { field: "value", type: "quantitative", title: "perplexity, lower is better (log)", scale: { type: "log", nice: false, padding: 14 } },
  )
}

// ---- (d) passkey ---------------------------------------------------------------------------------------

export interface PasskeyCell {
  readonly length: number
  /** The grid's other axis: needle depth (0–1, as a label like "50%") or the method when depth is unknown. */
  readonly row: string
  readonly accuracy: number
  readonly trials: number
  /** What the cell says (default the percentage); lines split at "\n". */
  readonly label?: string
}

/** Accuracy heatmap (viridis, 0–100%) with the percentage (or the cell's label) written in each cell. */
export function passkeyGridSpec(opts: { readonly title: string; readonly subtitle?: string; readonly rowTitle: string; readonly cells: readonly PasskeyCell[]; readonly rowOrder?: readonly string[] }): VlSpec {
  const rows = opts.rowOrder ?? [...new Set(opts.cells.map((c) => c.row))]
  const x = { field: "length", type: "ordinal", title: "context length (tokens)", sort: "ascending", axis: { labelAngle: 0 } }
  const y = { field: "row", type: "ordinal", title: opts.rowTitle, sort: rows }
  return {
    ...base(opts.title, opts.subtitle),
    width: Math.max(160, Math.min(WIDTH, 70 * new Set(opts.cells.map((c) => c.length)).size)),
    height: Math.max(120, (opts.cells.some((c) => c.label?.includes("\n")) ? 40 : 32) * rows.length),
    data: { values: opts.cells.map((c) => ({ ...c, label: c.label ?? `${Math.round(c.accuracy * 100)}%` })) },
    layer: [
      {
        mark: { type: "rect", stroke: "white", strokeWidth: 1 },
        encoding: {
          x,
          y,
          color: { field: "accuracy", type: "quantitative", title: "accuracy", scale: { scheme: "viridis", domain: [0, 1] }, legend: { format: ".0%" } },
        },
      },
      {
        mark: { type: "text", fontSize: 11, lineBreak: "\n" },
        encoding: {
          x,
          y,
          text: { field: "label" },
          // dark cells (low accuracy in viridis) need light text
          color: { condition: { test: "datum.accuracy < 0.5", value: "white" }, value: "black" },
        },
      },
    ],
  }
}

/** Passkey accuracy against length per method (log2 x, 0–100% y). */
export function passkeyLineSpec(opts: { readonly title: string; readonly subtitle?: string; readonly points: ReadonlyArray<{ readonly series: string; readonly length: number; readonly accuracy: number }> }): VlSpec {
  return lengthLinesSpec(opts, "context length (tokens, log2)", {
    field: "accuracy",
    type: "quantitative",
    title: "passkey retrieval accuracy",
    scale: { domain: [0, 1] },
    axis: { format: ".0%" },
  })
}
