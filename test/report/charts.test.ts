// Each chart from small fixture data: well-formed SVG with the expected titles, series and axis labels;
// a PNG with the PNG signature at 2× the SVG's size.
import { describe, expect, test } from "bun:test"
import {
  baselineSeries,
  convergenceSpec,
  factorCurveSpec,
  passkeyGridSpec,
  passkeyLineSpec,
  methodColorScale,
  perplexitySpec,
  wrap,
} from "../../plugins/report/charts.ts"
import { renderChart } from "../../plugins/report/render.ts"
import { ntkFactors, yarnFactors } from "../../plugins/rope/factors.ts"
import { geometry } from "./fixtures.ts"
import { assertWellFormedSvg, pngSize, svgSize, svgTexts } from "./svg.ts"

/** Renders and runs the checks every chart must pass; returns the chart's texts. */
async function check(name: string, spec: Record<string, unknown>, expected: readonly string[]): Promise<string[]> {
  const c = await renderChart(name, name, spec)
  assertWellFormedSvg(c.svg)
  const texts = svgTexts(c.svg)
  for (const e of expected) expect(texts).toContain(e)
  const svg = svgSize(c.svg)
  const png = pngSize(c.png)
  expect(png.width).toBe(Math.round(svg.width * 2))
  expect(png.height).toBe(Math.round(svg.height * 2))
  expect(svg.width).toBeGreaterThan(200)
  expect(svg.width).toBeLessThan(1400) // a long subtitle must wrap, not widen the chart
  expect(svg.height).toBeGreaterThan(100)
  return texts
}

describe("chart checks", () => {
  test("the well-formedness check rejects broken SVG", () => {
    const ok = '<svg xmlns="http://www.w3.org/2000/svg"><g><text>a &amp; b</text></g></svg>'
    expect(() => assertWellFormedSvg(ok)).not.toThrow()
    expect(() => assertWellFormedSvg(ok.replace("</g>", ""))).toThrow()
    expect(() => assertWellFormedSvg(ok.replace("&amp;", "&"))).toThrow("bare &")
    expect(() => assertWellFormedSvg(ok.replace(' xmlns="http://www.w3.org/2000/svg"', ""))).toThrow("namespace")
    expect(() => pngSize(new Uint8Array(32))).toThrow("signature")
  })
  test("methods keep their colour across charts; two checkpoints of one method do not share one", () => {
    const a = methodColorScale(["yarn", "none", "model"])
    const b = methodColorScale(["model", "pi", "yarn"])
    expect(a.range[a.domain.indexOf("yarn")]).toBe(b.range[b.domain.indexOf("yarn")]!)
    expect(a.range[a.domain.indexOf("model")]).toBe(b.range[b.domain.indexOf("model")]!)
    const two = methodColorScale(["model (base)", "model (finetune)", "pi (base)"])
    expect(new Set(two.range).size).toBe(3)
  })
  test("wrap keeps words and a width", () => {
    const lines = wrap("a ".repeat(200), 20)
    expect(lines.every((l) => l.length <= 20)).toBe(true)
    expect(lines.join(" ").split(" ").length).toBe(200)
  })
})

describe("charts", () => {
  test("(a) factor curves against PI, NTK and YaRN at the same scale, log y", async () => {
    const series = [{ name: "searched (s=8)", factors: [1, 1.5, 3, 6, 8, 8, 8.5, 9, 8, 8, 8, 8, 8, 8, 8, 8] }, ...baselineSeries(geometry, 8)]
    expect(series.map((s) => s.name)).toEqual(["searched (s=8)", "PI (s=8)", "NTK (s=8)", "YaRN (s=8)"])
    // the baselines are the rope helpers' values at that scale
    expect(Array.from(series[1]!.factors)).toEqual(new Array(16).fill(8))
    expect(Array.from(series[2]!.factors)).toEqual(Array.from(ntkFactors(geometry, 8)))
    expect(Array.from(series[3]!.factors)).toEqual(Array.from(yarnFactors(geometry, 8)))
    const spec = factorCurveSpec({ title: "Factors at s = 8", series })
    expect((spec["encoding"] as { y: { scale: { type: string } } }).y.scale.type).toBe("log")
    await check("factors", spec, ["Factors at s = 8", "searched (s=8)", "PI (s=8)", "NTK (s=8)", "YaRN (s=8)", "frequency pair i (0 = highest frequency)", "divisor λ_i = θ_i / θ'_i (log)"])
  })

  test("(b) search convergence: best so far over the population, failures left out", async () => {
    const population = [0, 1, 2].flatMap((g) => [0, 1, 2].map((k) => ({ evaluations: 10 * (g + 1), generation: g, fitness: k === 2 ? Number.MAX_VALUE : 30 - 5 * g + k })))
    const spec = convergenceSpec({ title: "Search convergence: evolutionary", population, best: [{ evaluations: 10, fitness: 30 }, { evaluations: 20, fitness: 25 }, { evaluations: 30, fitness: 20 }] })
    const values = (spec["data"] as { values: Array<{ fitness?: number }> }).values
    expect(values.some((v) => v.fitness === Number.MAX_VALUE)).toBe(false)
    await check("search", spec, ["Search convergence: evolutionary", "best so far", "population (each generation)", "fitness evaluations", "fitness (perplexity), log"])
  })

  test("(c) perplexity by length: log2 x at the measured lengths, log y, one line per method", async () => {
    const points = ["none", "pi", "yarn", "longrope"].flatMap((m, k) => [256, 512, 1024, 2048].map((L) => ({ series: m, length: L, value: 10 + k * Math.log2(L / 128) })))
    const spec = perplexitySpec({ title: "Perplexity by length (protocol: truncate)", points })
    const x = (spec["encoding"] as { x: { scale: { type: string; base: number }; axis: { values: number[] } } }).x
    expect(x.scale).toMatchObject({ type: "log", base: 2 })
    const texts = await check("ppl", spec, ["Perplexity by length (protocol: truncate)", "none", "pi", "yarn", "longrope", "evaluation length (tokens, log2)", "perplexity, lower is better (log)", "method"])
    for (const L of ["256", "512", "1024", "2048"]) expect(texts).toContain(L)
  })

  test("(d) passkey grid (viridis, % in cells) and accuracy by length", async () => {
    const cells = [256, 1024].flatMap((L) => ["0%", "50%", "100%"].map((row, k) => ({ length: L, row, accuracy: L === 256 ? 1 : 0.3 * k, trials: 10 })))
    const grid = passkeyGridSpec({ title: "Passkey accuracy by length and depth: longrope", rowTitle: "passkey depth", cells })
    const layer = (grid["layer"] as Array<{ encoding: { color: { scale?: { scheme: string } } } }>)[0]!
    expect(layer.encoding.color.scale?.scheme).toBe("viridis")
    const texts = await check("grid", grid, ["Passkey accuracy by length and depth: longrope", "passkey depth", "context length (tokens)", "accuracy", "60%", "30%"])
    expect(texts.filter((t) => t === "100%").length).toBeGreaterThanOrEqual(3) // the 256 column, plus the legend
    const line = passkeyLineSpec({ title: "Passkey accuracy by length", points: [{ series: "longrope", length: 256, accuracy: 1 }, { series: "longrope", length: 1024, accuracy: 0.3 }, { series: "pi", length: 256, accuracy: 1 }] })
    await check("passkey", line, ["Passkey accuracy by length", "longrope", "pi", "passkey retrieval accuracy", "context length (tokens, log2)"])
  })
})
