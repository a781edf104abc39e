// search's originalLength / betaFast / betaSlow / slidingWindow (Mistral as LongRoPE read it, §2.3, §2.5), with
// a recording SearchEvaluator (no model is loaded: the requests are what is checked), and the llama plugin with
// the window dropped: full attention past it, the same log-probs within it.
import { afterAll, describe, expect, test } from "bun:test"
import { Effect, Schema } from "effect"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { FitnessRequestSchema } from "../../cluster/protocol.ts"
import type { StageContext } from "../../pipeline/workflow/index.ts"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { yarnInitFactors } from "../../plugins/rope/factors.ts"
import { parseFactorSetFile } from "../../plugins/rope/formats.ts"
import { inspectLlamaModel } from "../../plugins/models/llama/family.ts"
import { type FitnessRequest, SearchEvaluator } from "../../plugins/search/evaluator.ts"
import { runSearchStage, type SearchParams } from "../../stages/search.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir, writeRandomModel } from "../models/random-model.ts"

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})
const tmp = (): string => {
  const d = tempDir("ropeway-search-params-")
  dirs.push(d)
  return d
}

// Mistral-shaped: a 16-token window, max_position_embeddings 64 (what config.json would give as L0).
const WINDOW = 16
const modelDir = tmp()
writeRandomModel(modelDir, {
  arch: "MistralForCausalLM", hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, vocab: 258, maxPositions: 64, seed: 3,
  configPatch: { sliding_window: WINDOW },
})
const geometry = { rotaryDim: 16, base: 10000 }
/** The model as the search loads it, with or without its sliding window. */
const inspectForSearch = (dir: string, fullAttention: boolean) => inspectLlamaModel(dir, { fullAttention })

async function search(params: SearchParams) {
  const requests: FitnessRequest[] = []
  const outDir = join(tmp(), "out")
  mkdirSync(outDir, { recursive: true })
  const ctx: StageContext<SearchParams, string, string> = {
    step: "search", params, seed: 7, key: "test", inputs: { model: modelDir },
    outputs: { factors: join(outDir, "factors"), log: join(outDir, "log") }, outDir, checkpointDir: tmp(),
    progress: { report: () => Effect.void, log: () => Effect.void },
  }
  // fitness = sum of factors: deterministic, and no model needed
  const evaluator = SearchEvaluator.of({
    concurrency: 1,
    evaluate: (req) => Effect.sync(() => (requests.push(req), { fitness: req.genome.factors.reduce((a, b) => a + b, 0), seconds: 0 })),
  })
  await Effect.runPromise(runSearchStage(ctx).pipe(Effect.provideService(SearchEvaluator, evaluator)))
  return { requests, factors: parseFactorSetFile(readFileSync(ctx.outputs["factors"]!, "utf8")) }
}

// population = the three init vectors (PI, NTK, YaRN-init), no children
const INIT_ONLY = { populationSize: 3, iterations: 0, parents: 3, mutants: 0, crossovers: 0 }

describe("search: Mistral's reading", () => {
  test("originalLength sets L0 (scale, the identity set, the file); β 128/2 shape the YaRN-init; slidingWindow null asks for full attention", async () => {
    const base: SearchParams = { mode: "first", length: 256, samples: 1, strategyParams: INIT_ONLY, data: { tasks: { filler: 1 } }, cacheDir: tmp() }
    const r = await search({ ...base, originalLength: 32, betaFast: 128, betaSlow: 2, slidingWindow: null })
    expect(r.factors.model.original_max_position_embeddings).toBe(32)
    expect(r.factors.sets.map((s) => s.max_length)).toEqual([32, 256])
    expect(r.factors.provenance.scale).toBe(8)
    expect(r.requests.length).toBe(3)
    for (const q of r.requests) expect(q.model.fullAttention).toBe(true)
    // the flag survives the cluster's wire format, so workers load the model the same way
    expect(Schema.decodeUnknownSync(FitnessRequestSchema)(JSON.parse(JSON.stringify(r.requests[0]))).model.fullAttention).toBe(true)
    const g = { ...geometry, originalLength: 32 }
    const mistral = Array.from(yarnInitFactors(g, 8, { betaFast: 128, betaSlow: 2 }))
    const llama = Array.from(yarnInitFactors(g, 8))
    expect(mistral).not.toEqual(llama) // the test can tell the two apart
    const genomes = r.requests.map((q) => [...q.genome.factors])
    expect(genomes).toContainEqual(mistral)
    expect(genomes).not.toContainEqual(llama)

    // defaults: L0 from config.json (64), β 32/1, the window as configured
    const d = await search(base)
    expect(d.factors.model.original_max_position_embeddings).toBe(64)
    expect(d.requests.every((q) => q.model.fullAttention === undefined)).toBe(true)
    expect(d.requests.map((q) => [...q.genome.factors])).toContainEqual(Array.from(yarnInitFactors({ ...geometry, originalLength: 64 }, 4)))
  })

  test("in second/readjust modes L0 comes from the factor set: a different originalLength is an error", async () => {
    const first = await search({ mode: "first", length: 256, samples: 1, strategyParams: INIT_ONLY, data: { tasks: { filler: 1 } }, cacheDir: tmp(), originalLength: 32 })
    const f = join(tmp(), "rope.json")
    writeFileSync(f, JSON.stringify(first.factors))
    const outDir = join(tmp(), "out")
    mkdirSync(outDir, { recursive: true })
    const params: SearchParams = { mode: "second", length: 512, samples: 1, strategyParams: INIT_ONLY, data: { tasks: { filler: 1 } }, originalLength: 64 }
    const ctx: StageContext<SearchParams, string, string> = {
      step: "s", params, seed: 1, key: "k", inputs: { model: modelDir, factors: f }, outputs: { factors: join(outDir, "f"), log: join(outDir, "l") }, outDir,
      checkpointDir: tmp(), progress: { report: () => Effect.void, log: () => Effect.void },
    }
    const evaluator = SearchEvaluator.of({ concurrency: 1, evaluate: () => Effect.succeed({ fitness: 1, seconds: 0 }) })
    const err = await Effect.runPromise(Effect.flip(runSearchStage(ctx).pipe(Effect.provideService(SearchEvaluator, evaluator))))
    expect(err.message).toContain("search.originalLength: 64 differs from the factor set's L0 32")
  })
})

describe("the llama plugin with the window dropped", () => {
  test("full attention past the window; within it the same log-probs as the configured model", async () => {
    const rt = await gpu()
    expect(inspectForSearch(modelDir, false).config.slidingWindow).toBe(WINDOW)
    expect(inspectForSearch(modelDir, true).config.slidingWindow).toBeUndefined()
    const windowed = await loadLlama(rt, modelDir)
    const full = await loadLlama(rt, inspectForSearch(modelDir, true))
    try {
      const long = Array.from({ length: 40 }, (_, i) => (i * 37) % 258)
      await expect(windowed.logprobs(long)).rejects.toThrow(/sliding_window 16 is shorter/)
      const lp = await full.logprobs(long)
      expect(lp.length).toBe(39)
      expect(lp.every((x) => Number.isFinite(x) && x < 0)).toBe(true)
      const short = long.slice(0, WINDOW)
      const a = await windowed.logprobs(short)
      const b = await full.logprobs(short)
      expect(Array.from(b)).toEqual(Array.from(a))
      // causal: the long pass' first positions are the short pass'
      for (let i = 0; i < a.length; i++) expect(lp[i]!).toBeCloseTo(a[i]!, 4)
    } finally {
      windowed.dispose()
      full.dispose()
    }
  }, 60_000)
})
