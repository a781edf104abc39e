/**
 * "Side by side": evaluations marked with the same `sideBySide` group (the evaluate stage's option; e.g.
 * one fine-tune run with PI, YaRN and LongRoPE factors) in one table per measure, a series per
 * (checkpoint, method) in step order, and the first series against each of the others at every length:
 * the ratio of perplexities with a paired bootstrap interval over the documents both scored (rows that
 * recorded their windows' NLL; else whether the two intervals overlap); the passkey accuracies.
 */
import { estimateText, intervalNote, overlaps, passkeyCounts, perplexityIntervalSpec, pooledWilson } from "./estimates.ts"
import { byNumber, code, type PasskeyRow, type PerplexityRow, perplexityGroups, ppl, slug, table, uniq } from "./markdown.ts"
import type { ChartRequests } from "./render.ts"
import { type Estimate, type PerplexityAggregation, perplexityRatioInterval, type WindowNll } from "../eval/intervals.ts"
import { AGGREGATION_OF, PROTOCOLS, type Protocol } from "../eval/protocols.ts"

/** A checkpoint (its evaluate step's `label`) under one RoPE method. */
interface Series {
  readonly model: string
  readonly method: string
}

const nameOf = (s: Series): string => (s.method === "model" ? s.model : `${s.method} (${s.model})`)
const isOf = (s: Series) => (r: { readonly model: string; readonly method: string }) => r.model === s.model && r.method === s.method
const groupOf = (r: Readonly<Record<string, unknown>>): string | undefined => (typeof r["group"] === "string" ? r["group"] : undefined)

/** One section per side-by-side group found in the rows, in order of first appearance. */
const aggregationOf = (protocol: string): PerplexityAggregation => ((PROTOCOLS as readonly string[]).includes(protocol) ? AGGREGATION_OF[protocol as Protocol] : "window-mean")
const windowsOf = (r: PerplexityRow): WindowNll[] | undefined => (Array.isArray(r["nll"]) ? (r["nll"] as WindowNll[]) : undefined)

/** "2.09 vs 2.29: ×0.91 [0.88, 0.95] paired, n=4 documents", or the unpaired overlap when windows are not recorded. */
function against(a: PerplexityRow, b: PerplexityRow): string {
  const wa = windowsOf(a), wb = windowsOf(b)
  const head = `${ppl(a.value)} vs ${ppl(b.value)}`
  if (wa !== undefined && wb !== undefined) {
    const r = perplexityRatioInterval(wa, wb, { a: aggregationOf(a.protocol), b: aggregationOf(b.protocol) }, { level: a.interval?.level ?? 0.95, replicates: a.interval?.replicates ?? 2000, seed: a.interval?.seed ?? 0 })
    const verdict = r.hi < 1 ? "lower" : r.lo > 1 ? "higher" : "not told apart"
    return `${head}: ×${r.value.toFixed(3)} [${r.lo.toFixed(3)}, ${r.hi.toFixed(3)}] (paired, n=${r.n} documents; ${verdict})`
  }
  return `${head}: ×${(a.value / b.value).toFixed(2)} (${overlaps(pplEstimate(a), pplEstimate(b)) ? "intervals overlap" : "intervals apart"})`
}

export function sideBySideSections(perplexity: readonly PerplexityRow[], passkey: readonly PasskeyRow[], charts: ChartRequests): string[] {
  const rows = [...perplexity, ...passkey]
  return uniq(rows.map(groupOf).filter((g): g is string => g !== undefined)).flatMap((group, k) => {
    const inGroup = <R extends PerplexityRow | PasskeyRow>(rs: readonly R[]) => rs.filter((r) => groupOf(r) === group)
    const series = uniq(inGroup<PerplexityRow | PasskeyRow>(rows).map((r) => JSON.stringify([r.model, r.method]))).map((j) => {
      const [model, method] = JSON.parse(j) as [string, string]
      return { model, method }
    })
    return compareSection(group, k, series, inGroup(perplexity), inGroup(passkey), charts)
  })
}

/** A perplexity row's estimate (a bare value for files written before intervals: n = documents, no width). */
const pplEstimate = (r: PerplexityRow): Estimate =>
  r.interval ?? { value: r.value, lo: r.value, hi: r.value, level: 0.95, n: Math.max(1, r.samples.length), unit: "documents", method: "bootstrap-percentile" }

function compareSection(group: string, k: number, series: readonly Series[], perplexity: readonly PerplexityRow[], passkey: readonly PasskeyRow[], charts: ChartRequests): string[] {
  const out = [`## Side by side: ${group}`, "", `${series.map((s) => code(nameOf(s))).join(", ")}, on the same documents and prompts; the first against each other below the tables.`, ""]
  const ref = series[0]!
  for (const g of perplexityGroups(perplexity.filter((r) => series.some((s) => isOf(s)(r))))) {
    const lengths = uniq(g.rows.map((r) => r.length)).sort(byNumber)
    const at = (s: Series, L: number) => g.rows.find((r) => isOf(s)(r) && r.length === L)
    const best = new Map(lengths.map((L) => [L, Math.min(...g.rows.filter((r) => r.length === L).map((r) => r.value))]))
    const growth = (s: Series): string => {
      const rs = g.rows.filter(isOf(s)).sort((a, b) => a.length - b.length)
      return rs.length < 2 ? "–" : `×${(rs[rs.length - 1]!.value / rs[0]!.value).toFixed(2)}`
    }
    out.push(
      `### Perplexity (protocol ${code(g.protocol)})`,
      "",
      table(
        ["series", ...lengths.map(String), `longest / shortest`],
        series.map((s) => [
          nameOf(s),
          ...lengths.map((L) => {
            const r = at(s, L)
            if (r === undefined) return "–"
            const t = estimateText(pplEstimate(r), "perplexity")
            return r.value === best.get(L) ? `**${t}**` : t
          }),
          growth(s),
        ]),
      ),
      "",
      intervalNote(g.rows.map(pplEstimate)),
      "",
    )
    const vs = series.slice(1).map((s) => {
      const parts = lengths.flatMap((L) => {
        const a = at(ref, L), b = at(s, L)
        if (a === undefined || b === undefined) return []
        return [`  - ${L}: ${against(a, b)}`]
      })
      return [`- ${code(nameOf(ref))} against ${code(nameOf(s))} (perplexity ratio; "lower": the first is lower beyond resampling noise):`, ...(parts.length > 0 ? parts : ["  - no common length"])].join("\n")
    })
    if (vs.length > 0) out.push(...vs, "")
    const name = `side-by-side-${k + 1}-${slug(g.protocol)}`
    const title = `${group}: perplexity by length (${g.protocol})`
    charts.push({
      name,
      title,
      spec: perplexityIntervalSpec({ title, subtitle: "bars: the interval", points: series.flatMap((s) => g.rows.filter(isOf(s)).map((r) => ({ series: nameOf(s), length: r.length, estimate: pplEstimate(r) }))) }),
    })
    out.push(`{{chart:${name}}}`, "")
  }
  const pk = passkey.filter((r) => series.some((s) => isOf(s)(r)))
  if (pk.length > 0) {
    const lengths = uniq(pk.map((r) => r.length)).sort(byNumber)
    const cell = (s: Series, L: number): Estimate | undefined => {
      const rs = pk.filter((r) => isOf(s)(r) && r.length === L)
      return rs.length === 0 ? undefined : pooledWilson(rs.map(passkeyCounts), rs.find((r) => r.interval !== undefined)?.interval?.level ?? 0.95)
    }
    const cells = series.map((s) => lengths.map((L) => cell(s, L)))
    out.push(
      "### Passkey retrieval",
      "",
      table(["series", ...lengths.map(String)], series.map((s, i) => [nameOf(s), ...cells[i]!.map((e) => (e === undefined ? "–" : estimateText(e, "accuracy")))])),
      "",
      intervalNote(cells.flat().filter((e): e is Estimate => e !== undefined)),
      "",
    )
  }
  return out
}
