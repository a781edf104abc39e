// `ropeway rope --plot FILE`: the effective table's λ_i against PI, NTK and YaRN at s = L / L0.
import { afterAll, describe, expect, test } from "bun:test"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { ropeReport } from "../../cli/commands/rope.ts"
import { ropePlotSpec } from "../../plugins/report/rope-plot.ts"
import { yarnFactors } from "../../plugins/rope/factors.ts"
import { entryCommand, runToEnd } from "../runtime.ts"
import { assertWellFormedSvg, svgTexts } from "./svg.ts"

const dir = mkdtempSync(join(tmpdir(), "ropeway-rope-plot-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
// `rope` reads only config.json (a Phi-3-mini-shaped one: rotary dim 96, L0 4096); no weights needed
const long = Array.from({ length: 48 }, (_, i) => 1 + (i * i) / 50)
writeFileSync(
  join(dir, "config.json"),
  JSON.stringify({
    architectures: ["Phi3ForCausalLM"],
    hidden_size: 3072,
    intermediate_size: 8192,
    vocab_size: 32064,
    num_attention_heads: 32,
    num_hidden_layers: 32,
    max_position_embeddings: 131072,
    original_max_position_embeddings: 4096,
    rope_theta: 10000,
    rope_scaling: { type: "longrope", short_factor: new Array(48).fill(1), long_factor: long },
  }),
)

type Series = { series: string; i: number; factor: number }
const seriesOf = (spec: Record<string, unknown>, name: string): number[] =>
  ((spec["data"] as { values: Series[] }).values).filter((v) => v.series === name).sort((a, b) => a.i - b.i).map((v) => v.factor)

describe("rope --plot", () => {
  test("the spec: the effective factors and the baselines at s = L / L0", () => {
    const spec = ropePlotSpec(ropeReport(dir, 32768))
    // λ_i = θ_i / θ'_i from the table, so equal to the config's long_factor up to rounding
    const eff = seriesOf(spec, "longrope (effective)")
    expect(eff.length).toBe(48)
    eff.forEach((x, i) => expect(x).toBeCloseTo(long[i]!, 12))
    expect(seriesOf(spec, "PI (s=8)")).toEqual(new Array(48).fill(8))
    const yarn = seriesOf(spec, "YaRN (s=8)")
    expect(yarn).toEqual(Array.from(yarnFactors({ rotaryDim: 96, base: 10000, originalLength: 4096 }, 8)))
    // Phi-3-mini's YaRN ramp runs from dim 15 to 34 (longrope-method.md)
    expect(yarn[15]).toBe(1)
    expect(yarn[34]).toBeCloseTo(8, 12)
    expect(seriesOf(spec, "NTK (s=8)")[47]).toBeCloseTo(8, 12)
    // below the original context nothing is scaled: baselines at s = 1
    expect(seriesOf(ropePlotSpec(ropeReport(dir, 2048)), "PI (s=1)")).toEqual(new Array(48).fill(1))
  })

  test("the CLI writes an SVG with the title, the series and the axis labels", async () => {
    const out = join(dir, "plots", "rope.svg")
    const { stdout, stderr, code } = await runToEnd(entryCommand("cli/main.ts", "rope", "--model", dir, "--length", "32768", "--json", "--plot", out))
    expect(stderr).toContain(`plot: ${out}`)
    expect(code).toBe(0)
    expect(JSON.parse(stdout).method).toBe("longrope") // --json output stays pure JSON
    expect(existsSync(out)).toBe(true)
    const svg = readFileSync(out, "utf8")
    assertWellFormedSvg(svg)
    const texts = svgTexts(svg)
    for (const t of ["RoPE factors at length 32768 vs PI, NTK and YaRN at s = 8", "longrope (effective)", "PI (s=8)", "NTK (s=8)", "YaRN (s=8)", "frequency pair i (0 = highest frequency)", "divisor λ_i = θ_i / θ'_i (log)"]) {
      expect(texts).toContain(t)
    }
  })
})
