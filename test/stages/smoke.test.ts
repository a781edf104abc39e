// workflows/smoke.yaml end to end on the real tiny model and the shared device: metrics.json valid and
// complete, and a second run reuses every step with identical artifacts.
import { afterAll, describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { mkdtempSync, readFileSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import { layerCollect, loadWorkflow, type ProgressEvent, runWorkflow, type Workflow } from "../../cli/workflow.ts"
import type { EvaluateParams } from "../../stages/evaluate.ts"
import { readMetrics, writeRunMetrics } from "../../plugins/eval/metrics.ts"
import { syntheticDocument } from "../../plugins/data/synthetic.ts"
import { BYTE_BOS, byteTokenizer } from "../../plugins/data/tokenizer.ts"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { gpu } from "../gpu-shared.ts"

const store = mkdtempSync(join(tmpdir(), "ropeway-smoke-"))
afterAll(() => removeTree(store))

const SMOKE = resolve(import.meta.dirname, "../../workflows/smoke.yaml")

describe("workflows/smoke.yaml", () => {
  test("runs end to end; a second run reuses every step", async () => {
    const rt = await gpu()
    const events: ProgressEvent[] = []
    const wf: Workflow = await Effect.runPromise(loadWorkflow(SMOKE))
    const go = () =>
      Effect.runPromise(
        runWorkflow(wf, { store, printRunDir: false }).pipe(Effect.provide(layerCollect(events)), Effect.provideService(Gpu, rt)),
      )
    const first = await go()
    expect(first.manifest.status).toBe("done")
    const step = first.manifest.steps.find((s) => s.name === "evaluate-base")!
    const file = step.outputs["metrics"]!.path
    const metrics = readMetrics(file) // validates the schema

    const p = wf.steps.find((s) => s.name === "evaluate-base")!.params as EvaluateParams
    for (const method of p.methods) {
      for (const length of p.lengths) {
        for (const protocol of p.protocols) {
          const hits = metrics.perplexity.filter((e) => e.method === method && e.length === length && e.protocol === protocol)
          expect(hits.length).toBe(1)
          const e = hits[0]!
          expect(Number.isFinite(e.value) && e.value > 1).toBe(true)
          expect(e.samples.length).toBe(p.samples)
          expect(e.model).toBe("base")
          expect(e.bos).toContain("BOS")
        }
      }
    }
    expect(metrics.perplexity.length).toBe(p.methods.length * p.lengths.length * p.protocols.length)
    // at 1× every baseline is plain RoPE; at 2× they differ
    const at = (L: number) => new Set(metrics.perplexity.filter((e) => e.length === L && e.protocol === "truncate").map((e) => e.value))
    expect(at(512).size).toBe(1)
    expect(at(1024).size).toBe(p.methods.length)

    // one number again from the manifest alone, in a standalone pass: plain RoPE at 1× came out of a
    // longer shared pass in the stage, and must equal a pass over just its own window
    const e = metrics.perplexity.find((x) => x.method === "none" && x.length === 512 && x.protocol === "truncate")!
    const params = step.params as { seed?: number; tokens?: number; lengths: number[] }
    const tokens = params.tokens ?? Math.max(...params.lengths)
    const doc = syntheticDocument({ tokenizer: byteTokenizer(), seed: params.seed ?? step.seed, length: tokens }, 0).ids
    const model = await loadLlama(rt, first.manifest.steps[0]!.outputs["model"]!.path)
    try {
      const lp = await model.logprobs([BYTE_BOS, ...doc.slice(0, 511)], { rope: resolveRope({ ...model.config.rope, scaling: undefined })(512) })
      expect(lp.length).toBe(511)
      expect(Math.exp(-lp.reduce((a, b) => a + b, 0) / lp.length)).toBeCloseTo(e.value, 9)
    } finally {
      model.dispose()
    }

    // the run-level merge
    const merged = writeRunMetrics(store, first.manifest)
    expect(readMetrics(merged!).perplexity.filter((e) => e.model === "base")).toEqual([...metrics.perplexity])

    const bytes = readFileSync(file)
    events.length = 0
    const second = await go()
    expect(second.manifest.steps.every((s) => s.status === "cached")).toBe(true)
    expect(events.filter((e) => e._tag === "StepStart" || e._tag === "StepProgress")).toEqual([])
    for (const [i, s] of second.manifest.steps.entries()) {
      for (const [name, o] of Object.entries(s.outputs)) expect(o.hash).toBe(first.manifest.steps[i]!.outputs[name]!.hash)
    }
    expect(readFileSync(second.manifest.steps.find((s) => s.name === "evaluate-base")!.outputs["metrics"]!.path).equals(bytes)).toBe(true)
  })
})
