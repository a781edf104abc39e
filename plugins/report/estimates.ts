/**
 * Report pieces for numbers with intervals (plugins/eval Estimate): table cells "a [lo, hi] (n=…)",
 * grids of them, error bars on the length charts, and the retrieval depth × length heatmap with each
 * cell's interval. Builders take plain rows, as charts.ts's do.
 */
import { type Estimate, wilson } from "../eval/intervals.ts"
import { type PasskeyCell, fmt, passkeyGridSpec, passkeyLineSpec, perplexitySpec } from "./charts.ts"
import { pct, ppl, table } from "./markdown.ts"
import type { VlSpec } from "./render.ts"

/** How a value and its ends are written: perplexity (2 decimals) or a share (percent). */
export type EstimateStyle = "perplexity" | "accuracy"

const pctInt = (x: number): string => `${Math.round(x * 100)}%`

/** "2.31 [2.05, 2.60] (n=4)" or "90% [74%, 97%] (n=20)". */
export function estimateText(e: Pick<Estimate, "value" | "lo" | "hi" | "n">, style: EstimateStyle): string {
  const f = style === "perplexity" ? ppl : pct
  const g = style === "perplexity" ? ppl : pctInt
  return `${f(e.value)} [${g(e.lo)}, ${g(e.hi)}] (n=${e.n})`
}

/** How an interval was made, for the note under a table: "95% Wilson intervals over trials". */
export function intervalNote(estimates: readonly Estimate[]): string {
  const kinds = [...new Set(estimates.map((e) => {
    const what = e.method === "wilson" ? "Wilson score interval" : `percentile bootstrap (${e.replicates ?? "?"} resamples of the ${e.unit}, seed ${e.seed ?? "?"})`
    return `${Math.round(e.level * 1000) / 10}% ${what}; n counts ${e.unit}`
  }))]
  return kinds.length === 0 ? "" : `Brackets: ${kinds.join("; ")}.`
}

/** The Wilson interval of counts pooled (one length over several depths): Σ successes of Σ trials. */
export const pooledWilson = (parts: ReadonlyArray<{ readonly successes: number; readonly trials: number }>, level = 0.95): Estimate =>
  wilson(parts.reduce((a, p) => a + p.successes, 0), parts.reduce((a, p) => a + p.trials, 0), { level })

/** A passkey row's counts (`correct` when recorded, else accuracy × trials). */
export const passkeyCounts = (r: { readonly accuracy: number; readonly trials: number; readonly correct?: number }) => ({ successes: r.correct ?? Math.round(r.accuracy * r.trials), trials: r.trials })

/** A Wilson estimate's counts. */
export const estimateCounts = (e: Estimate) => ({ successes: e.successes ?? Math.round(e.value * e.n), trials: e.n })

/** Whether two intervals share a point. */
export const overlaps = (a: Pick<Estimate, "lo" | "hi">, b: Pick<Estimate, "lo" | "hi">): boolean => a.lo <= b.hi && b.lo <= a.hi

export interface EstimateCell {
  readonly row: string
  readonly column: number | string
  readonly estimate: Estimate
}

/** A rows × columns table of estimates (e.g. methods × lengths); a missing cell shows "–". */
export function estimateGrid(cells: readonly EstimateCell[], opts: { readonly rowTitle: string; readonly columnTitle: (c: number | string) => string; readonly style: EstimateStyle }): string {
  const rows = [...new Set(cells.map((c) => c.row))]
  const columns = [...new Set(cells.map((c) => c.column))].sort((a, b) => (typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b))))
  const at = new Map(cells.map((c) => [`${c.row}\u0000${c.column}`, c.estimate]))
  return table(
    [opts.rowTitle, ...columns.map(opts.columnTitle)],
    rows.map((r) => [r, ...columns.map((c) => {
      const e = at.get(`${r}\u0000${c}`)
      return e === undefined ? "–" : estimateText(e, opts.style)
    })]),
  )
}

// ---- charts --------------------------------------------------------------------------------------

/**
 * A single-view line chart (mark + encoding, data rows carrying `lo` and `hi`) with a vertical error bar
 * from lo to hi at every point, in the line's colour.
 */
export function withErrorBars(spec: VlSpec): VlSpec {
  const { mark, encoding, ...rest } = spec as { mark: unknown; encoding: Record<string, Record<string, unknown>> } & VlSpec
  if (mark === undefined || encoding === undefined) throw new Error("withErrorBars: expected a single-view spec with mark and encoding")
  const { x, y, color } = encoding
  const yScale = y?.["scale"]
  return {
    ...rest,
    layer: [
      {
        mark: { type: "rule", strokeWidth: 1.5, opacity: 0.7 },
        encoding: { x, y: { field: "lo", type: "quantitative", ...(yScale === undefined ? {} : { scale: yScale }), title: y?.["title"] }, y2: { field: "hi" }, color },
      },
      { mark, encoding },
    ],
  }
}

export interface IntervalPoint {
  readonly series: string
  readonly length: number
  readonly estimate: Estimate
}

const flat = (p: IntervalPoint) => ({ series: p.series, length: p.length, lo: p.estimate.lo, hi: p.estimate.hi, n: p.estimate.n })

/** Perplexity against length (perplexitySpec) with each point's interval as an error bar. */
export function perplexityIntervalSpec(opts: { readonly title: string; readonly subtitle?: string; readonly points: readonly IntervalPoint[] }): VlSpec {
  return withErrorBars(perplexitySpec({ ...opts, points: opts.points.map((p) => ({ ...flat(p), value: p.estimate.value })) }))
}

/** An accuracy against length (passkey or a retrieval task) with each point's interval as an error bar. */
export function accuracyIntervalSpec(opts: { readonly title: string; readonly subtitle?: string; readonly yTitle: string; readonly points: readonly IntervalPoint[] }): VlSpec {
  const spec = passkeyLineSpec({ ...opts, points: opts.points.map((p) => ({ ...flat(p), accuracy: p.estimate.value })) }) as { encoding: { y: Record<string, unknown> } } & VlSpec
  return withErrorBars({ ...spec, encoding: { ...spec.encoding, y: { ...spec.encoding.y, title: opts.yTitle } } })
}

export interface DepthCell {
  readonly length: number
  /** Share of the haystack before the needle, 0–1. */
  readonly depth: number
  readonly accuracy: Estimate
}

/**
 * The needle-in-a-haystack heatmap: depth (rows, top = start of the text) × length (columns), colour =
 * accuracy, each cell "90%" over its interval "[74, 97]"; the trials per cell go in the subtitle.
 */
export function retrievalHeatmapSpec(opts: { readonly title: string; readonly subtitle?: string; readonly cells: readonly DepthCell[] }): VlSpec {
  const depths = [...new Set(opts.cells.map((c) => c.depth))].sort((a, b) => a - b)
  const label = (d: number): string => `${fmt(Math.round(d * 1000) / 10)}%`
  const trials = [...new Set(opts.cells.map((c) => c.accuracy.n))].sort((a, b) => a - b)
  const level = [...new Set(opts.cells.map((c) => c.accuracy.level))]
  const cells: PasskeyCell[] = opts.cells.map((c) => ({
    length: c.length,
    row: label(c.depth),
    accuracy: c.accuracy.value,
    trials: c.accuracy.n,
    label: `${pctInt(c.accuracy.value)}\n[${Math.round(c.accuracy.lo * 100)}, ${Math.round(c.accuracy.hi * 100)}]`,
  }))
  const note = `depth: share of the text before the needle; ${trials.join("–")} trials per cell; brackets: ${level.map((l) => `${Math.round(l * 100)}%`).join(", ")} interval, percent`
  return passkeyGridSpec({
    title: opts.title,
    subtitle: opts.subtitle === undefined ? note : `${opts.subtitle}; ${note}`,
    rowTitle: "needle depth",
    cells,
    rowOrder: depths.map(label),
  })
}
