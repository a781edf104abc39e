// report.md from a fixture metrics.json (+ a search log and a factor set): the tables carry the right
// numbers, the charts it links exist, and the `report` stages and writeRunReport put files where they say.
import { afterAll, beforeAll, describe, expect, test } from "bun:test"
import { Effect, Exit } from "effect"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { StageContext } from "../../pipeline/workflow/stage.ts"
import { loadExtras } from "../../plugins/report/inputs.ts"
import { buildReport, factorSetSeries, type MetricsInput, type Report, writeReport, writeRunReport } from "../../plugins/report/report.ts"
import { parseMetrics } from "../../plugins/eval/metrics.ts"
import { readMetricsForReport } from "../../plugins/report/report.ts"
import { reportSearchStage, reportStage, type ReportParams } from "../../stages/report.ts"
import { factorSetFixture, intervalMetricsFixture, metricsFixture, searchLogFixture } from "./fixtures.ts"
import { assertWellFormedSvg, pngSize } from "./svg.ts"

const dir = mkdtempSync(join(tmpdir(), "ropeway-report-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

// a search step's output as stages/search.ts writes it: a log folder (ours + LongRoPE's + CSV) and rope.json
const logDir = join(dir, "search-log")
mkdirSync(logDir)
writeFileSync(join(logDir, "search-log.json"), JSON.stringify(searchLogFixture))
writeFileSync(join(logDir, "longrope-log.json"), JSON.stringify({ iteration: 3, population: [[[1, 2], 14]], history: [[[1, 2], 20], [[1, 3], 14]] }))
writeFileSync(join(logDir, "result_final.csv"), "1\n2\n")
const factorsFile = join(dir, "rope.json")
writeFileSync(factorsFile, JSON.stringify(factorSetFixture))
const metricsFile = join(dir, "metrics.json")
writeFileSync(metricsFile, JSON.stringify(metricsFixture))

const metrics = metricsFixture as unknown as MetricsInput
let report: Report
beforeAll(async () => {
  report = await buildReport({
    metrics,
    extras: loadExtras([logDir, factorsFile]),
    run: { workflow: { name: "default", file: "workflows/default.yaml", hash: "0123456789abcdef0123" }, seed: 7, model: { spec: "tiny", kind: "builtin", hash: null } },
  })
})

describe("the fixture", () => {
  test("is a valid metrics.json by the metrics schema", () => {
    expect(() => parseMetrics(metricsFixture)).not.toThrow()
    // the report keeps fields the schema does not name (depth drives the passkey grid)
    expect((readMetricsForReport(metricsFile).passkey[0] as Record<string, unknown>)["depth"]).toBe(0)
  })
})

describe("report.md", () => {
  test("says what was run: workflow, model, seed, methods, lengths, search result", () => {
    const md = report.markdown
    expect(md).toStartWith("# ropeway run report: default\n")
    expect(md).toContain("- **Workflow**: `default` (`workflows/default.yaml`")
    expect(md).toContain("- **Model**: `tiny` (builtin)")
    expect(md).toContain("- **Seed**: 7")
    expect(md).toContain("- **RoPE settings compared**: `model`, `none`, `pi`, `yarn`")
    expect(md).toContain("- **Lengths**: 256, 512, 1024, 2048 tokens")
    expect(md).toContain("best fitness 14 after 48 evaluations in 4 generations")
  })

  test("perplexity: one table per protocol, methods × lengths, best in bold, protocol and samples stated", () => {
    const md = report.markdown
    expect(md).toContain(
      [
        "| method | 256 | 512 | 1024 | 2048 |",
        "| :--- | ---: | ---: | ---: | ---: |",
        "| model | **12.35** | **12.90** | **13.40** | **14.75** |",
        "| none | **12.35** | 40.20 | 310.50 | 1802.25 |",
        "| pi | **12.35** | 14.10 | 16.80 | 21.05 |",
        "| yarn | **12.35** | 13.20 | 14.30 | 16.13 |",
      ].join("\n"),
    )
    expect(md).toContain("### Protocol `truncate`")
    expect(md).toContain("Protocol **truncate**; samples: 3 document(s) per number (synthetic(seed=7)#0, synthetic(seed=7)#1, synthetic(seed=7)#2)")
    expect(md).toContain("### Protocol `sliding`")
    expect(md).toContain("| model | 11.50 | 13.90 |")
    expect(md).toContain("stride: 128")
    // protocols are never mixed in one table
    const sliding = md.slice(md.indexOf("### Protocol `sliding`"))
    expect(sliding.slice(0, sliding.indexOf("## Passkey"))).not.toContain("1802.25")
  })

  test("passkey: accuracy by length, depths pooled, with the Wilson interval of the trials; short-context and search tables", () => {
    const md = report.markdown
    expect(md).toContain("| method | 256 | 1024 | 2048 |")
    // rows without `correct` count round(accuracy × trials) per depth: 10 + 10 + 10, 10 + 9 + 9, 10 + 9 + 7
    expect(md).toContain("| model | 100% [89%, 100%] (n=30) | 93.3% [79%, 98%] (n=30) | 86.7% [70%, 95%] (n=30) |")
    expect(md).toContain("| pi | 100% [89%, 100%] (n=30) | 16.7% [7%, 34%] (n=30) | 16.7% [7%, 34%] (n=30) |")
    expect(md).toContain("Brackets: 95% Wilson score interval; n counts trials.")
    expect(md).toContain("| method | length | perplexity | KL to plain RoPE (nats/token) | scale |")
    expect(md).toContain("| model (finetune) | 256 | 12.61 | 0.0123 | – |")
    expect(md).toContain("| search-log.json | evolutionary | 4 | 48 | 14 | 4 values in [1, 4], n̂ = 4 | 42 |")
    expect(md).toContain("| search | longrope | 2048 | 13.87 | 48 |")
    expect(md).toContain("| 1 | 2048 | 8 | 1 | 8.396 | – | – |")
  })

  test("embeds every chart by relative path, SVG and PNG", () => {
    const names = report.charts.map((c) => c.name)
    expect(names).toEqual(["search", "factors", "perplexity-truncate", "perplexity-sliding", "passkey-grid-model", "passkey-grid-pi", "passkey"])
    for (const n of names) {
      expect(report.markdown).toContain(`](charts/${n}.svg)`)
      expect(report.markdown).toContain(`[PNG](charts/${n}.png)`)
    }
    expect(report.markdown).not.toContain("{{chart:")
    expect(report.markdown).toContain("## How to reproduce")
    expect(report.markdown).toContain("bun run workflow workflows/default.yaml")
  })

  test("writeReport writes charts and report.md, no temp files left", () => {
    const out = join(dir, "written")
    const path = writeReport(out, report)
    expect(path).toBe(join(out, "report.md"))
    expect(readFileSync(path, "utf8")).toBe(report.markdown)
    const files = readdirSync(join(out, "charts")).sort()
    expect(files).toEqual(report.charts.flatMap((c) => [`${c.name}.png`, `${c.name}.svg`]).sort())
    for (const link of report.markdown.matchAll(/\]\((charts\/[^)]+)\)/g)) expect(existsSync(join(out, link[1]!))).toBe(true)
    for (const c of report.charts) {
      assertWellFormedSvg(readFileSync(join(out, "charts", `${c.name}.svg`), "utf8"))
      expect(pngSize(readFileSync(join(out, "charts", `${c.name}.png`))).width).toBeGreaterThan(300)
    }
  })

  test("a run without search, passkey or short-context numbers says so", async () => {
    const r = await buildReport({ metrics: { ...metrics, passkey: [], short: [], search: [] } })
    expect(r.markdown).toContain("No passkey retrieval was measured in this run.")
    expect(r.markdown).toContain("No short-context measurement in this run.")
    expect(r.markdown).not.toContain("## Search")
    expect(r.charts.map((c) => c.name)).toEqual(["perplexity-truncate", "perplexity-sliding"])
  })
})

describe("report.md from the evaluate stage's metrics: intervals, retrieval, tasks, side by side", () => {
  const m = intervalMetricsFixture()
  const grouped = { ...m, perplexity: m.perplexity.map((r) => ({ ...r, group: "fine-tuned baselines" })), passkey: m.passkey.map((r) => ({ ...r, group: "fine-tuned baselines" })) }
  let r: Report
  beforeAll(async () => {
    expect(() => parseMetrics(grouped)).not.toThrow()
    r = await buildReport({ metrics: grouped as unknown as MetricsInput })
  })

  test("every perplexity and accuracy cell carries its interval and n; the note says how they were made", () => {
    const at = (model: string, L: number) => m.perplexity.find((x) => x.model === model && x.length === L)!.interval
    const e = at("longrope-ft", 4096)
    expect(r.markdown).toContain(`**${e.value.toFixed(2)} [${e.lo.toFixed(2)}, ${e.hi.toFixed(2)}] (n=4)**`)
    expect(r.markdown).toContain("Brackets: 95% percentile bootstrap (400 resamples of the documents, seed 3); n counts documents.")
    expect(r.markdown).toContain("| model (pi-ft) | 100% [93%, 100%] (n=50) | 78% [65%, 87%] (n=50) |")
    expect(r.markdown).toContain(`- **Perplexity at 4096 tokens** (truncate): model (longrope-ft) ${e.value.toFixed(2)} [${e.lo.toFixed(2)}, ${e.hi.toFixed(2)}] (n=4)`)
  })

  test("side by side: one table per measure, the first series against each other with a paired ratio", () => {
    const md = r.markdown
    expect(md).toContain("## Side by side: fine-tuned baselines")
    expect(md).toContain("| series | 512 | 1024 | 2048 | 4096 | longest / shortest |")
    expect(md).toMatch(/\| pi-ft \| [^|]+ \| [^|]+ \| [^|]+ \| [^|]+ \| ×1\.33 \|/)
    // the fixture's documents scale together, so the paired ratio has no width: 2.24 / 3.04
    expect(md).toContain("  - 4096: 2.24 vs 3.04: ×0.738 [0.738, 0.738] (paired, n=4 documents; lower)")
    expect(md).toContain("| yarn-ft | 100% [93%, 100%] (n=50) | 60% [46%, 72%] (n=50) |")
    // before the per-protocol tables
    expect(md.indexOf("## Side by side")).toBeLessThan(md.indexOf("## Perplexity by length"))
  })

  test("retrieval: per task a method × length table pooled over depths, a heatmap per method; the tasks table", () => {
    const md = r.markdown
    expect(md).toContain("### Task `multikey`")
    expect(md).toContain("| yarn | 83.3% [66%, 93%] (n=30) | 70% [52%, 83%] (n=30) | 36.7% [22%, 54%] (n=30) |")
    expect(md).toContain("| `passkey-choice` | longrope-ft | model | 78% [69%, 85%] (n=100) | 75% [66%, 82%] (n=100) | 0 | 0 |")
    expect(md).toContain("Brackets: 95% Wilson score interval; n counts items.")
    expect(r.charts.map((c) => c.name)).toEqual([
      "side-by-side-1-truncate", "perplexity", "passkey-grid", "passkey",
      "retrieval-single", "retrieval-single-model", "retrieval-single-yarn", "retrieval-multikey", "retrieval-multikey-model", "retrieval-multikey-yarn",
    ])
  })

  test("charts: error bars on the length charts, the interval written in each heatmap cell", () => {
    const heat = r.charts.find((c) => c.name === "retrieval-multikey-yarn")!
    assertWellFormedSvg(heat.svg)
    const cell = m.retrieval.find((x) => x.task === "multikey" && x.method === "yarn" && x.length === 4096 && x.depth === 1)!.accuracy
    expect(heat.svg).toContain(`>${Math.round(cell.value * 100)}%<`)
    expect(heat.svg).toContain(`>[${Math.round(cell.lo * 100)}, ${Math.round(cell.hi * 100)}]<`)
    expect(heat.svg).toContain(">needle depth<")
    for (const name of ["side-by-side-1-truncate", "perplexity", "passkey", "retrieval-single"]) {
      const c = r.charts.find((x) => x.name === name)!
      expect(c.svg).toContain("bars: the interval")
      expect(pngSize(c.png).width).toBeGreaterThan(300)
    }
  })
})

describe("passkey and factor sets, other shapes", () => {
  test("without depths the grid is method × length", async () => {
    const passkey = [256, 1024].flatMap((length) => ["model", "pi"].map((method) => ({ method, model: "base", length, accuracy: method === "pi" && length > 256 ? 0.2 : 1, trials: 10 })))
    const r = await buildReport({ metrics: { perplexity: [], passkey, short: [], search: [] } })
    expect(r.charts.map((c) => c.name)).toEqual(["passkey-grid", "passkey"])
    expect(r.markdown).toContain("| pi | 100% [72%, 100%] (n=10) | 20% [6%, 51%] (n=10) |")
    expect(r.markdown).toContain("- **Passkey accuracy at 1024 tokens**: model 100% [72%, 100%] (n=10), pi 20% [6%, 51%] (n=10)")
    expect(r.charts[0]!.svg).toContain(">method<")
    expect(r.markdown).not.toContain("Misses, by method and length")
  })
  test("misses list key → answer per method and length, from the rows' keys and answers", async () => {
    const row = (method: string, length: number, keys: number[], answers: Array<number | null>) =>
      ({ method, model: "base", length, accuracy: keys.filter((k, i) => answers[i] === k).length / keys.length, trials: keys.length, keys, answers })
    const passkey = [
      row("model", 512, [12, 345], [12, 345]),
      row("model", 8192, [4173, 20066, 7], [41738, 20066, null]),
      row("pi", 8192, Array.from({ length: 10 }, (_, i) => i + 1), Array.from({ length: 10 }, () => 99)),
    ]
    const md = (await buildReport({ metrics: { perplexity: [], passkey, short: [], search: [] } })).markdown
    expect(md).toContain("| model | 8192 | 4173 → 41738, 7 → none |")
    expect(md).toContain("| pi | 8192 | 1 → 99, 2 → 99, 3 → 99, 4 → 99, 5 → 99, 6 → 99, 7 → 99, 8 → 99, … (2 more) |")
    // a cell without misses gets no row
    expect(md).not.toContain("| model | 512 |")
  })
  test("per-layer factors plot layer 0; baselines at the file's scale", () => {
    const rows = [0, 1].map(() => factorSetFixture.sets[1]!.factors)
    const { series, scale, perLayer } = factorSetSeries({ name: "rope.json", file: { ...factorSetFixture, sets: [{ max_length: 2048, factors: rows }] } as never })
    expect([scale, perLayer]).toEqual([8, true])
    expect(series.map((s) => s.name)).toEqual(["search, length ≤ 2048 (s=8)", "PI (s=8)", "NTK (s=8)", "YaRN (s=8)"])
    expect(Array.from(series[0]!.factors)).toEqual(rows[0]!)
  })
})

describe("inputs", () => {
  test("a search folder gives our log (not also LongRoPE's copy); a factor set is validated", () => {
    const x = loadExtras([logDir, factorsFile])
    expect(x.searches.map((s) => [s.name, s.strategy, s.evaluations, s.bestFitness])).toEqual([["search-log.json", "evolutionary", 48, 14]])
    expect(x.factorSets.map((f) => f.name)).toEqual(["rope.json"])
    // failures (Number.MAX_VALUE) are kept in the data; the chart drops them
    expect(x.searches[0]!.population.length).toBe(20)
  })
  test("a LongRoPE log alone: every evaluation a point, best so far the running minimum", () => {
    const only = join(dir, "longrope-only.json")
    writeFileSync(only, '{"iteration": 1, "population": [], "history": [[[1], 30], [[2], Infinity], [[3], 25], [[4], 27]]}')
    const s = loadExtras([only]).searches[0]!
    expect(s.best).toEqual([{ evaluations: 1, fitness: 30 }, { evaluations: 3, fitness: 25 }, { evaluations: 4, fitness: 25 }])
    expect(s.bestFitness).toBe(25)
    expect(s.population.length).toBe(3)
  })
  test("errors name the file", () => {
    const bad = join(dir, "bad-rope.json")
    writeFileSync(bad, JSON.stringify({ ...factorSetFixture, sets: [] }))
    expect(() => loadExtras([bad])).toThrow("bad-rope.json (not a valid factor-set file)")
    writeFileSync(bad, JSON.stringify({ ...factorSetFixture, sets: [{ max_length: 256, factors: [1, 2] }] }))
    expect(() => loadExtras([bad])).toThrow("bad-rope.json (not a valid factor-set file): sets[0].factors")
    const text = join(dir, "notes.txt")
    writeFileSync(text, "hello")
    expect(() => loadExtras([text])).toThrow("notes.txt: expected a search log or factor-set JSON file")
    expect(loadExtras([text], { strict: false }).searches).toEqual([])
    expect(() => loadExtras([join(dir, "missing")])).toThrow("no such file or folder")
  })
})

const ctxFor = (out: string, inputs: Record<string, string>): StageContext<ReportParams, string, "report"> => ({
  step: "report",
  params: { title: "tiny run" },
  seed: 3,
  key: "abcdef0123456789",
  inputs,
  outputs: { report: join(out, "report") },
  outDir: out,
  checkpointDir: join(out, "ckpt"),
  progress: { report: () => Effect.void, log: () => Effect.void },
})

describe("stages", () => {
  test("report-search writes report.md and charts into its output folder", async () => {
    const out = join(dir, "stage")
    const result = await Effect.runPromise(reportSearchStage.run(ctxFor(out, { metrics: metricsFile, log: logDir, factors: factorsFile })))
    expect(result).toMatchObject({ perplexity: 18, passkey: 18, searches: 1 })
    const md = readFileSync(join(out, "report", "report.md"), "utf8")
    expect(md).toStartWith("# tiny run\n")
    expect(md).toContain("This report was made by step `report` (cache key `abcdef012345`, seed 3)")
    expect(existsSync(join(out, "report", "charts", "factors.svg"))).toBe(true)
    expect(existsSync(join(out, "report", "charts", "search.png"))).toBe(true)
    expect(Object.keys(reportStage.inputs)).toEqual(["metrics"])
  })
  test("an invalid metrics.json fails the stage with the file named", async () => {
    const bad = join(dir, "bad-metrics.json")
    writeFileSync(bad, JSON.stringify({ perplexity: [{ method: "pi" }], passkey: [], short: [], search: [] }))
    const exit = await Effect.runPromiseExit(reportStage.run(ctxFor(join(dir, "stage-bad"), { metrics: bad })))
    expect(Exit.isFailure(exit)).toBe(true)
    expect(JSON.stringify(exit)).toContain("bad-metrics.json: not a valid metrics file")
    expect(existsSync(join(dir, "stage-bad", "report", "report.md"))).toBe(false)
  })
})

describe("writeRunReport", () => {
  test("reads the logs and factor sets among the steps' outputs and lists the steps", async () => {
    const run = join(dir, "run")
    mkdirSync(run)
    const manifest = {
      workflow: { name: "default", file: "workflows/default.yaml", hash: "feedfacefeedface0000" },
      seed: 1,
      model: { spec: "tiny", kind: "builtin", hash: "1234567890abcdef1234" },
      plugins: [{ name: "ropeway", version: "0.1.0", source: "builtin" }],
      adapter: null,
      steps: [
        { name: "search", stage: "search", version: "1", status: "done", seconds: 12.34, key: "aaaabbbbccccdddd", outputs: { factors: { kind: "rope-factors", path: factorsFile }, log: { kind: "search-log", path: logDir } } },
        { name: "evaluate", stage: "evaluate", version: "1", status: "cached", seconds: null, key: "eeeeffff00001111", outputs: { metrics: { kind: "metrics", path: metricsFile } } },
      ],
    }
    const path = await writeRunReport(run, manifest, readMetricsForReport(metricsFile))
    const md = readFileSync(path, "utf8")
    expect(path).toBe(join(run, "report.md"))
    expect(md).toContain("| search | search | 1 | done | 12.3 | `aaaabbbbcccc` |")
    expect(md).toContain("| evaluate | evaluate | 1 | cached | – | `eeeeffff0000` |")
    // search logs are named after the step that wrote them (a run has several search-log.json files)
    expect(md).toMatch(/\| search\/search-log\.json \| /)
    expect(md).toContain(`(\`${join(run, "manifest.json")}\`)`)
    expect(md).toContain("Plugins: ropeway@0.1.0 (builtin).")
    expect(existsSync(join(run, "charts", "search.svg"))).toBe(true)
    expect(existsSync(join(run, "charts", "factors.svg"))).toBe(true)
  })
})
