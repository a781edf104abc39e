/**
 * Markdown tables for the report. Numbers are printed the same way everywhere (fixed decimals for
 * perplexity, percentages for accuracy) so a table and a test can agree on the text.
 */

import type { Estimate } from "../eval/intervals.ts"

/** Rows as metrics.json holds them: the named fields plus whatever else a stage recorded. */
export type Row = Readonly<Record<string, unknown>>

export interface PerplexityRow extends Row {
  readonly method: string
  readonly model: string
  readonly length: number
  readonly value: number
  readonly protocol: string
  readonly samples: readonly string[]
  /** The value's bootstrap interval (files written before intervals have none). */
  readonly interval?: Estimate
}

export interface PasskeyRow extends Row {
  readonly method: string
  readonly model: string
  readonly length: number
  readonly accuracy: number
  readonly trials: number
  readonly correct?: number
  readonly interval?: Estimate
}

/** A retrieval task's row (plugins/eval/metrics.ts RetrievalEntry). */
export interface RetrievalRow extends Row {
  readonly task: string
  readonly method: string
  readonly model: string
  readonly length: number
  readonly depth?: number
  readonly accuracy: Estimate
  readonly partial: Estimate
  readonly trials: number
}

/** A multiple-choice task's row (plugins/eval/metrics.ts TaskEntry). */
export interface TaskRow extends Row {
  readonly task: string
  readonly method: string
  readonly model: string
  readonly length: number
  readonly acc: Estimate
  readonly acc_norm: Estimate
  readonly items: number
  readonly shots: number
}

/** Escapes what would break a table cell. */
export const cell = (v: unknown): string => {
  const s = typeof v === "number" ? num(v) : typeof v === "string" ? v : v === undefined || v === null ? "" : JSON.stringify(v)
  return s.replace(/\|/g, "\\|").replace(/\r?\n/g, " ")
}

/** 4 significant digits, integers as they are. */
export const num = (x: number): string =>
  Number.isInteger(x) ? String(x) : !Number.isFinite(x) ? String(x) : Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3 ? x.toExponential(3) : String(Number(x.toPrecision(4)))

export const ppl = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : String(x))
export const pct = (x: number): string => `${Math.round(x * 1000) / 10}%`

export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>, align?: ReadonlyArray<"l" | "r">): string {
  const sep = header.map((_, i) => ((align?.[i] ?? (i === 0 ? "l" : "r")) === "r" ? "---:" : ":---"))
  return [header, sep, ...rows].map((r) => `| ${r.join(" | ")} |`).join("\n")
}

export const uniq = <A>(xs: readonly A[]): A[] => [...new Set(xs)]
export const byNumber = (a: number, b: number) => a - b
/** A file-name-safe stem. */
export const slug = (s: string): string => s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "x"
/** Inline code. */
export const code = (s: string): string => `\`${s.replace(/`/g, "'")}\``

/** Series label: the method, plus the checkpoint when a table mixes several. */
export const seriesLabel = (r: { readonly method: string; readonly model: string }, models: number): string =>
  models > 1 ? `${r.method} (${r.model})` : r.method

export interface PerplexityGroup {
  readonly protocol: string
  readonly rows: readonly PerplexityRow[]
}

/** One group per protocol (numbers from different protocols are not comparable, so never one table). */
export const perplexityGroups = (rows: readonly PerplexityRow[]): PerplexityGroup[] =>
  uniq(rows.map((r) => r.protocol)).map((protocol) => ({ protocol, rows: rows.filter((r) => r.protocol === protocol) }))

/** How a group was measured, in one paragraph: samples, BOS, aggregation, stride, data. */
export function perplexityProtocolNote(g: PerplexityGroup): string {
  const samples = uniq(g.rows.flatMap((r) => r.samples))
  const counts = uniq(g.rows.map((r) => r.samples.length))
  const field = (k: string) => uniq(g.rows.map((r) => r[k]).filter((v): v is string | number => typeof v === "string" || typeof v === "number"))
  const shown = samples.length <= 4 ? samples.join(", ") : `${samples.slice(0, 3).join(", ")}, … ${samples[samples.length - 1]}`
  const parts = [
    `Protocol **${g.protocol}**`,
    `samples: ${counts.length === 1 ? counts[0] : counts.sort(byNumber).join("–")} document(s) per number (${shown || "none recorded"})`,
  ]
  for (const [k, label] of [["bos", "BOS"], ["aggregation", "value"], ["stride", "stride"], ["data", "data"]] as const) {
    const v = field(k)
    if (v.length > 0) parts.push(`${label}: ${v.join("; ")}`)
  }
  return parts.join("; ") + "."
}

/** Perplexity, methods × lengths; the best (lowest) value at each length in bold. `text` writes a cell (default the value). */
export function perplexityTable(rows: readonly PerplexityRow[], text: (r: PerplexityRow) => string = (r) => ppl(r.value)): string {
  const models = uniq(rows.map((r) => r.model)).length
  const lengths = uniq(rows.map((r) => r.length)).sort(byNumber)
  const series = uniq(rows.map((r) => seriesLabel(r, models)))
  const at = (s: string, L: number) => rows.find((r) => seriesLabel(r, models) === s && r.length === L)
  const best = new Map(lengths.map((L) => [L, Math.min(...rows.filter((r) => r.length === L && Number.isFinite(r.value)).map((r) => r.value))]))
  const body = series.map((s) => [
    cell(s),
    ...lengths.map((L) => {
      const r = at(s, L)
      if (r === undefined) return "–"
      return r.value === best.get(L) && series.length > 1 ? `**${text(r)}**` : text(r)
    }),
  ])
  return table(["method", ...lengths.map(String)], body)
}

/**
 * Passkey accuracy, methods × lengths, with the trials behind each number. With depths, a (method,
 * length) has several rows: `text` writes the cell from all of them (default their trial-weighted mean).
 */
export function passkeyTable(rows: readonly PasskeyRow[], text: (rows: readonly PasskeyRow[]) => string = pooledAccuracyText): string {
  const models = uniq(rows.map((r) => r.model)).length
  const lengths = uniq(rows.map((r) => r.length)).sort(byNumber)
  const series = uniq(rows.map((r) => seriesLabel(r, models)))
  const body = series.map((s) => [
    cell(s),
    ...lengths.map((L) => {
      const rs = rows.filter((r) => seriesLabel(r, models) === s && r.length === L)
      return rs.length === 0 ? "–" : text(rs)
    }),
  ])
  return table(["method", ...lengths.map(String)], body)
}

const pooledAccuracyText = (rs: readonly PasskeyRow[]): string => {
  const trials = rs.reduce((a, r) => a + r.trials, 0)
  const acc = trials > 0 ? rs.reduce((a, r) => a + r.accuracy * r.trials, 0) / trials : rs.reduce((a, r) => a + r.accuracy, 0) / rs.length
  return `${pct(acc)} (n=${trials})`
}

/**
 * The misses behind the accuracy table, as "key → answer" per (method, length), for rows that recorded
 * their keys and answers (the evaluate stage does). The digits tell a lost key (49011 → 9401) from
 * one found and copied with a wrong end (4173 → 41738), which the accuracy alone cannot. Null when no
 * row recorded a miss.
 */
export function passkeyMisses(rows: readonly PasskeyRow[], perCell = 8): string | null {
  const models = uniq(rows.map((r) => r.model)).length
  const cells = new Map<string, { series: string; length: number; misses: string[] }>()
  for (const r of rows) {
    const keys = r["keys"], answers = r["answers"]
    if (!Array.isArray(keys) || !Array.isArray(answers)) continue
    const series = seriesLabel(r, models)
    const id = `${series}\u0000${r.length}`
    const c = cells.get(id) ?? { series, length: r.length, misses: [] }
    cells.set(id, c)
    keys.forEach((k, i) => {
      const a = answers[i]
      if (a !== k) c.misses.push(`${k} → ${a === null || a === undefined ? "none" : a}`)
    })
  }
  const body = [...cells.values()]
    .filter((c) => c.misses.length > 0)
    .sort((a, b) => a.length - b.length)
    .map((c) => [cell(c.series), String(c.length), cell(c.misses.slice(0, perCell).join(", ") + (c.misses.length > perCell ? `, … (${c.misses.length - perCell} more)` : ""))])
  return body.length === 0 ? null : table(["method", "length", "misses (key → first integer generated)"], body, ["l", "r", "l"])
}

/** Any list of records (short-context fidelity, search summaries): columns in first-seen order, known ones first. */
export function recordTable(rows: readonly Row[], first: readonly string[] = ["method", "model", "length", "protocol"]): string {
  const keys = uniq([...first.filter((k) => rows.some((r) => k in r)), ...rows.flatMap((r) => Object.keys(r))])
  // long lists (sample ids, factor vectors) would swamp a table: show their size instead
  const show = (v: unknown): string => (Array.isArray(v) ? (v.length <= 3 ? cell(v.map((x) => (typeof x === "number" ? num(x) : x)).join(", ")) : `[${v.length} items]`) : cell(v))
  return table(keys, rows.map((r) => keys.map((k) => show(r[k]))), keys.map((k) => (rows.some((r) => typeof r[k] === "number") ? "r" : "l")))
}
