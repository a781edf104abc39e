// examples/plugin: its workflow runs through runWorkflow; its strategy follows the Strategy contract;
// `ropeway list --plugin` shows what it adds.
import { afterAll, describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { mkdtempSync, readFileSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import { formatListing, importPluginSpecs, listing, registryWith } from "../../cli/commands/list.ts"
import { layerSilent, loadWorkflow, runWorkflow } from "../../cli/workflow.ts"
import type { SearchContext } from "../../plugins/search/types.ts"
import { readMetrics } from "../../plugins/eval/metrics.ts"
import { randomSearch } from "../../examples/plugin/plugin.ts"
import { gpu } from "../gpu-shared.ts"

const EXAMPLE = resolve(import.meta.dirname, "../../examples/plugin")
const store = mkdtempSync(join(tmpdir(), "ropeway-example-"))
afterAll(() => removeTree(store))

describe("examples/plugin", () => {
  test("workflow.yaml runs: factor-report next to evaluate", async () => {
    const wf = await Effect.runPromise(loadWorkflow(join(EXAMPLE, "workflow.yaml")))
    expect(wf.plugins.map((p) => p.name)).toContain("example-plugin")
    const rt = await gpu()
    const { manifest } = await Effect.runPromise(
      runWorkflow(wf, { store, printRunDir: false }).pipe(Effect.provide(layerSilent), Effect.provideService(Gpu, rt)),
    )
    expect(manifest.status).toBe("done")
    const factors = manifest.steps.find((s) => s.name === "factors")!
    const report = JSON.parse(readFileSync(factors.outputs["report"]!.path, "utf8")) as {
      lengths: Array<{ length: number; scale: number; tables: Array<{ method: string; factors: number[]; attentionScale: number }> }>
    }
    expect(report.lengths.map((r) => r.length)).toEqual([512, 2048, 4096])
    const at = (L: number, m: string) => report.lengths.find((r) => r.length === L)!.tables.find((t) => t.method === m)!
    // the tiny model has plain RoPE: λ = 1 everywhere; PI at 4× divides every dim by 4; NTK's λ grows with
    // the dim from 1 to s; YaRN keeps the high-frequency dims, divides the low ones by s, scales attention
    expect(at(2048, "model").factors.every((f) => f === 1)).toBe(true)
    expect(at(2048, "pi").factors.every((f) => Math.abs(f - 4) < 1e-12)).toBe(true)
    const ntk = at(4096, "ntk").factors
    expect(ntk[0]).toBeCloseTo(1, 12)
    expect(ntk.at(-1)!).toBeCloseTo(8, 9)
    const yarn = at(4096, "yarn")
    expect(yarn.factors[0]).toBeCloseTo(1, 12)
    expect(yarn.factors.at(-1)!).toBeCloseTo(8, 9)
    expect(yarn.attentionScale).toBeCloseTo(0.1 * Math.log(8) + 1, 12)
    // at 1× every baseline is the identity
    expect(report.lengths[0]!.tables.every((t) => t.factors.every((f) => Math.abs(f - 1) < 1e-12))).toBe(true)
    const csv = readFileSync(factors.outputs["table"]!.path, "utf8").trim().split("\n")
    expect(csv[0]).toBe("length,method,dim,factor,start_tokens,attention_scale")
    expect(csv.length - 1).toBe(3 * 4 * 16) // lengths × tables × rotary_dim/2 (head_dim 32)

    const metrics = readMetrics(manifest.steps.find((s) => s.name === "evaluate")!.outputs["metrics"]!.path)
    expect(metrics.perplexity.map((e) => `${e.method}@${e.length}`).sort()).toEqual(["none@1024", "none@512", "yarn@1024", "yarn@512"])
  })

  test("random-search: a deterministic, resumable strategy that keeps the best", () => {
    const target = Array.from({ length: 8 }, (_, i) => 1 + (3 * i) / 7)
    const fitness = (f: readonly number[]) => f.reduce((a, x, i) => a + (x - target[i]!) ** 2, 0)
    const ctx: SearchContext = {
      dims: 8, scale: 4, seed: 3, fidelity: { samples: 1, length: 1024 },
      init: [{ factors: Array(8).fill(4) }, { factors: Array(8).fill(1) }],
    }
    const runAll = (resumeAt?: number) => {
      let s = randomSearch.init(ctx, { population: 6, generations: 5 })
      let batches = 0
      while (!randomSearch.done(s)) {
        const p = randomSearch.propose(s)
        expect(randomSearch.propose(p.state).candidates).toEqual(p.candidates) // idempotent until observed
        s = randomSearch.observe(p.state, p.candidates.map((c) => ({ id: c.id, fitness: fitness(c.genome.factors) })))
        if (++batches === resumeAt) s = JSON.parse(JSON.stringify(s)) // a checkpoint round trip
        for (const c of p.candidates) {
          const f = c.genome.factors
          expect(f.every((x, i) => x >= 1 && x <= 4 && (i === 0 || x >= f[i - 1]!))).toBe(true)
        }
      }
      return s
    }
    const a = runAll()
    const b = runAll(2)
    expect(b).toEqual(a)
    const best = randomSearch.best(a)!
    expect(best.fitness).toBeLessThan(Math.min(fitness(ctx.init[0]!.factors), fitness(ctx.init[1]!.factors)))
    expect(randomSearch.progress(a)).toMatchObject({ generation: 5, evaluations: 6 + 2 + 4 * 6 })
    expect(() => randomSearch.init(ctx, { population: 0 })).toThrow(/population/)
  })

  test("ropeway list --plugin shows the stage with its params and the strategy", async () => {
    const ps = await Effect.runPromise(importPluginSpecs([join(EXAMPLE, "plugin.ts")]))
    const l = listing(registryWith(ps))
    const stage = l.stages.find((s) => s.name === "factor-report")!
    expect(stage.plugin).toBe("example-plugin")
    expect(stage.params).toEqual([
      { name: "lengths", type: "list of integer", required: true, description: "input lengths to report" },
      { name: "baselines", type: "boolean", required: false, description: "add PI, NTK and YaRN at the same scale (default true)" },
    ])
    expect(l.searchStrategies.find((s) => s.name === "random-search")).toMatchObject({ plugin: "example-plugin", params: "population (8), generations (4)" })
    expect(l.searchStrategies.map((s) => s.name)).toContain("evolutionary") // plugins/search's built-ins too
    expect(l.stages.map((s) => s.name)).toContain("evaluate")
    expect(l.models.find((m) => m.name === "tiny")!.description).toContain("pre-trained by ropeway")
    expect(l.ropeMethods.find((m) => m.name === "longrope")!.aliases).toEqual(["su"])
    const text = formatListing(l)
    expect(text).toContain("factor-report  [example-plugin]")
    expect(text).toContain("lengths: list of integer")
    // a missing plugin file is one clear error
    const bad = await Effect.runPromise(Effect.result(importPluginSpecs(["./nope/missing-plugin.ts"])))
    expect(bad._tag).toBe("Failure")
  })
})
