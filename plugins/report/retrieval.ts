/**
 * The report's retrieval-task section (RULER-shaped needles, plugins/eval/retrieval.ts): per task, the
 * all-found accuracy by method × length (pooled over depths, Wilson interval), RULER's mean share found
 * where a cell is one row, accuracy by length with error bars, and one depth × length heatmap per
 * (task, method) when depths were asked for.
 */
import { accuracyIntervalSpec, estimateCounts, estimateGrid, intervalNote, pooledWilson, retrievalHeatmapSpec } from "./estimates.ts"
import { code, type RetrievalRow, seriesLabel, slug, uniq } from "./markdown.ts"
import type { ChartRequests } from "./render.ts"

export function retrievalSection(rows: readonly RetrievalRow[], charts: ChartRequests): string[] {
  if (rows.length === 0) return []
  const out = [
    "## Retrieval tasks (RULER-shaped needles)",
    "",
    "A trial counts when every value asked for is generated (RULER's string_match_all, whole words); the mean share found is RULER's own score. " +
      "single: one needle; multikey: distractor needles for other keys; multivalue: one key with several values, all asked; multiquery: several keys asked at once.",
    "",
  ]
  const models = uniq(rows.map((r) => r.model)).length
  for (const task of uniq(rows.map((r) => r.task))) {
    const rs = rows.filter((r) => r.task === task)
    const series = uniq(rs.map((r) => seriesLabel(r, models)))
    const cells = series.flatMap((s) =>
      uniq(rs.filter((r) => seriesLabel(r, models) === s).map((r) => r.length)).map((length) => {
        const at = rs.filter((r) => seriesLabel(r, models) === s && r.length === length)
        return { row: s, column: length, estimate: at.length === 1 ? at[0]!.accuracy : pooledWilson(at.map((r) => estimateCounts(r.accuracy)), at[0]!.accuracy.level), single: at.length === 1 ? at[0] : undefined }
      }),
    )
    const haystacks = uniq(rs.map((r) => String(r["haystack"] ?? "?")))
    const depths = uniq(rs.map((r) => r.depth)).filter((d): d is number => d !== undefined).sort((a, b) => a - b)
    out.push(
      `### Task ${code(task)}`,
      "",
      `Haystack: ${haystacks.join("; ")}. ${depths.length === 0 ? "Needles at random depths" : `Depths ${depths.map((d) => `${Math.round(d * 100)}%`).join(", ")}, pooled in the table`}.`,
      "",
      "All values found:",
      "",
      estimateGrid(cells, { rowTitle: "method", columnTitle: String, style: "accuracy" }),
      "",
    )
    const partial = cells.filter((c) => c.single !== undefined).map((c) => ({ row: c.row, column: c.column, estimate: c.single!.partial }))
    if (partial.length > 0) out.push("Mean share of the values found (RULER's score):", "", estimateGrid(partial, { rowTitle: "method", columnTitle: String, style: "accuracy" }), "")
    out.push(intervalNote([...cells.map((c) => c.estimate), ...partial.map((c) => c.estimate)]), "")
    if (uniq(rs.map((r) => r.length)).length > 1) {
      const name = `retrieval-${slug(task)}`
      const title = `Retrieval (${task}): accuracy by length`
      charts.push({ name, title, spec: accuracyIntervalSpec({ title, subtitle: "all values found; bars: the interval", yTitle: "trials with every value found", points: cells.map((c) => ({ series: c.row, length: c.column, estimate: c.estimate })) }) })
      out.push(`{{chart:${name}}}`, "")
    }
    if (depths.length > 0) {
      for (const s of series) {
        const name = `retrieval-${slug(task)}-${slug(s)}`
        const title = `Retrieval (${task}) by depth and length: ${s}`
        const grid = rs.filter((r) => seriesLabel(r, models) === s && r.depth !== undefined)
        charts.push({ name, title, spec: retrievalHeatmapSpec({ title, cells: grid.map((r) => ({ length: r.length, depth: r.depth!, accuracy: r.accuracy })) }) })
        out.push(`{{chart:${name}}}`, "")
      }
    }
  }
  return out
}
