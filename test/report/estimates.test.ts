// Report pieces for estimates: "a [lo, hi] (n=…)" cells and grids, error bars on the length charts, and
// the retrieval depth × length heatmap with intervals: spec shapes, and each rendered to SVG and PNG.
import { describe, expect, test } from "bun:test"
import { perplexityInterval, wilson } from "../../plugins/eval/intervals.ts"
import { passkeyLineSpec } from "../../plugins/report/charts.ts"
import { accuracyIntervalSpec, estimateGrid, estimateText, intervalNote, perplexityIntervalSpec, retrievalHeatmapSpec, withErrorBars } from "../../plugins/report/estimates.ts"
import { renderChart } from "../../plugins/report/render.ts"
import { assertWellFormedSvg, pngSize, svgSize, svgTexts } from "./svg.ts"

type Layer = { mark: { type: string; lineBreak?: string }; encoding: Record<string, { field?: string; scale?: { type?: string; domain?: unknown } }> }

const rendered = async (spec: Record<string, unknown>): Promise<string[]> => {
  const c = await renderChart("x", "x", spec)
  assertWellFormedSvg(c.svg)
  expect(pngSize(c.png).width).toBe(Math.round(svgSize(c.svg).width * 2))
  return svgTexts(c.svg)
}

describe("cells", () => {
  test("a value, its interval and n, as perplexity or percent", () => {
    expect(estimateText(wilson(18, 20), "accuracy")).toBe("90% [70%, 97%] (n=20)")
    expect(estimateText({ value: 2.3149, lo: 2.05, hi: 2.6, n: 4 }, "perplexity")).toBe("2.31 [2.05, 2.60] (n=4)")
  })
  test("a grid of estimates with columns in order and gaps marked; the note says how intervals were made", () => {
    const md = estimateGrid(
      [
        { row: "model", column: 1024, estimate: wilson(9, 10) },
        { row: "model", column: 512, estimate: wilson(10, 10) },
        { row: "yarn", column: 512, estimate: wilson(7, 10) },
      ],
      { rowTitle: "method", columnTitle: (c) => `${c} tokens`, style: "accuracy" },
    )
    expect(md.split("\n")).toEqual([
      "| method | 512 tokens | 1024 tokens |",
      "| :--- | ---: | ---: |",
      "| model | 100% [72%, 100%] (n=10) | 90% [60%, 98%] (n=10) |",
      "| yarn | 70% [40%, 89%] (n=10) | – |",
    ])
    const boot = perplexityInterval([{ doc: 0, sum: 1, count: 1 }, { doc: 1, sum: 2, count: 1 }], "window-mean", { seed: 4, replicates: 500 })
    expect(intervalNote([wilson(1, 2), boot])).toBe(
      "Brackets: 95% Wilson score interval; n counts trials; 95% percentile bootstrap (500 resamples of the documents, seed 4); n counts documents.",
    )
  })
})

describe("charts", () => {
  test("error bars: a rule from lo to hi under the original line, on the same scale", async () => {
    const points = [512, 1024, 2048].flatMap((length, i) =>
      ["model", "yarn"].map((series, k) => ({ series, length, estimate: perplexityInterval([0, 1, 2].map((d) => ({ doc: d, sum: 10 * (1 + i * k + d / 4), count: 10 })), "window-mean", { seed: 1 }) })),
    )
    const spec = perplexityIntervalSpec({ title: "Perplexity by length", subtitle: "bars: 95% bootstrap over documents", points })
    const [bars, line] = spec["layer"] as [Layer, Layer]
    expect(bars.mark.type).toBe("rule")
    expect([bars.encoding["y"]!.field, bars.encoding["y2"]!.field]).toEqual(["lo", "hi"])
    expect(bars.encoding["y"]!.scale?.type).toBe("log")
    expect(line.mark.type).toBe("line")
    expect(line.encoding["y"]!.field).toBe("value")
    const values = (spec["data"] as { values: Array<{ lo: number; value: number; hi: number }> }).values
    expect(values).toHaveLength(6)
    for (const v of values) expect(v.lo <= v.value && v.value <= v.hi).toBe(true)
    const texts = await rendered(spec)
    for (const t of ["Perplexity by length", "model", "yarn", "evaluation length (tokens, log2)"]) expect(texts).toContain(t)
    expect(() => withErrorBars(spec)).toThrow("single-view")
  })

  test("accuracy with Wilson bars keeps the 0–100% axis and takes its own y title", async () => {
    const spec = accuracyIntervalSpec({
      title: "multikey retrieval by length",
      yTitle: "multikey accuracy (all values found)",
      points: [512, 1024].map((length, i) => ({ series: "model", length, estimate: wilson(20 - 8 * i, 20) })),
    })
    const [bars, line] = spec["layer"] as [Layer, Layer]
    expect(line.encoding["y"]!.scale?.domain).toEqual([0, 1])
    expect(bars.encoding["y"]!.scale?.domain).toEqual([0, 1])
    expect(passkeyLineSpec({ title: "t", points: [] })["mark"]).toEqual(line.mark) // the line is charts.ts's
    expect(await rendered(spec)).toContain("multikey accuracy (all values found)")
  })

  test("the depth × length heatmap: depths top to bottom, each cell its accuracy over its interval", async () => {
    const cells = [1024, 2048, 4096].flatMap((length, i) => [1, 0.5, 0].map((depth) => ({ length, depth, accuracy: wilson(20 - 5 * i - Math.round(depth * 4), 20) })))
    const spec = retrievalHeatmapSpec({ title: "single retrieval (model)", cells })
    const [rects, text] = spec["layer"] as [Layer, Layer]
    expect(rects.encoding["color"]!.scale?.domain).toEqual([0, 1])
    expect(text.mark.lineBreak).toBe("\n")
    expect((rects.encoding["y"] as unknown as { sort: string[] }).sort).toEqual(["0%", "50%", "100%"])
    const values = (spec["data"] as { values: Array<{ length: number; row: string; label: string }> }).values
    expect(values.find((v) => v.length === 1024 && v.row === "0%")!.label).toBe("100%\n[84, 100]")
    expect((spec["title"] as { subtitle: string[] }).subtitle.join(" ")).toContain("20 trials per cell")
    const texts = await rendered(spec)
    for (const t of ["single retrieval (model)", "100%", "[84, 100]", "needle depth", "context length (tokens)", "4096"]) expect(texts).toContain(t)
  })
})
