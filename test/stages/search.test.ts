/**
 * The `search` stage on a tiny random llama (8 frequency pairs, L0 = 64) with very small settings:
 * fitness values against an independent computation from model.logprobs, the on-disk cache (a rerun
 * evaluates nothing), interruption mid-batch then resume = an uninterrupted run, the three modes, and
 * the factor-set file through plugins/rope formats and resolveRope.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { Deferred, Effect, Fiber } from "effect"
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import type { RopeTable } from "../../kernels/rope-table.ts"
import type { StageContext } from "../../pipeline/workflow/stage.ts"
import { needleSample, IGNORE_LABEL } from "../../plugins/data/prompts.ts"
import { Rng } from "../../common/rng.ts"
import { syntheticDocument } from "../../plugins/data/synthetic.ts"
import { byteTokenizer } from "../../plugins/data/tokenizer.ts"
import { loadLlama, type LlamaModel } from "../../plugins/models/llama/model.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { type FactorSetFile, factorSetToHfLongrope, factorSetToScaling, formatFactorSetFile, parseFactorSetFile, ropeSpecFromConfig } from "../../plugins/rope/formats.ts"
import { yarnFactors, yarnGetMscale, yarnInitFactors } from "../../plugins/rope/factors.ts"
import type { CacheEntry } from "../../plugins/search/cache.ts"
import { type FitnessPlugin, needlePpl, perplexity, pplTruncate, type PplTruncateParams, type SampleSource } from "../../plugins/search/fitness.ts"
import { definePlugin, PluginRegistry, Registry } from "../../pipeline/workflow/plugin.ts"
import { factorsFromCsv, type SearchLog } from "../../plugins/search/index.ts"
import { ModelLoader } from "../../stages/kit.ts"
import { runSearchStage, type SearchParams } from "../../stages/search.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir, writeRandomModel } from "../models/random-model.ts"

/** Generous: llvmpipe on shared cores can be slow when other suites run at the same time. */
// generous: the first training step compiles its kernels, minutes on a cold shader cache of a loaded 2-core machine
const TIMEOUT = 180_000
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})
const tmp = (): string => {
  const d = tempDir("ropeway-search-")
  dirs.push(d)
  return d
}

const L0 = 64
const modelDir = tmp()
writeRandomModel(modelDir, { hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, vocab: 258, maxPositions: L0, seed: 11 })
const HALF = 8 // head_dim 16 → 8 frequency pairs

/** population 6, 2 child generations of 3 (12 evaluations per search). */
const SMALL = { populationSize: 6, iterations: 2, parents: 3, mutants: 2, crossovers: 1 }
const FILLER = { tasks: { filler: 1 } }

interface Run {
  readonly result: Record<string, unknown>
  readonly factors: FactorSetFile
  readonly logDir: string
  readonly reports: string[]
}

function context(params: SearchParams, inputs: Record<string, string>, checkpointDir: string, reports: string[]): StageContext<SearchParams, string, string> {
  const outDir = join(tmp(), "out")
  mkdirSync(outDir, { recursive: true })
  return {
    step: "search",
    params,
    seed: 7,
    key: "test",
    inputs,
    outputs: { factors: join(outDir, "factors"), log: join(outDir, "log") },
    outDir,
    checkpointDir,
    progress: {
      report: (_f, note) => Effect.sync(() => void reports.push(note ?? "")),
      log: (line) => Effect.sync(() => void reports.push(line)),
    },
  }
}

/** A model loader that counts forward passes and can fire after the n-th one. */
function countingLoader(counter: { calls: number }, onCall?: (n: number) => void) {
  return ModelLoader.of({
    load: async (dir: string) => {
      const m = await loadLlama(await gpu(), dir)
      return {
        ...m,
        logprobs: (tokens: Uint32Array | readonly number[], o: { readonly rope: RopeTable; readonly chunk?: number }) => {
          counter.calls++
          onCall?.(counter.calls)
          return m.logprobs(tokens, o)
        },
      }
    },
  })
}

async function runStage(params: SearchParams, opts: { inputs?: Record<string, string>; checkpointDir?: string; counter?: { calls: number }; model?: string } = {}): Promise<Run> {
  const reports: string[] = []
  const ctx = context(params, { model: opts.model ?? modelDir, ...opts.inputs }, opts.checkpointDir ?? tmp(), reports)
  const rt = await gpu()
  const result = (await Effect.runPromise(
    runSearchStage(ctx).pipe(Effect.provideService(ModelLoader, countingLoader(opts.counter ?? { calls: 0 })), Effect.provideService(Gpu, rt)),
  )) as Record<string, unknown>
  const factors = parseFactorSetFile(readFileSync(ctx.outputs["factors"]!, "utf8"))
  return { result, factors, logDir: ctx.outputs["log"]!, reports }
}

const cacheEntries = (dir: string): CacheEntry[] =>
  readdirSync(dir).flatMap((sub) => readdirSync(join(dir, sub)).filter((f) => f.endsWith(".json")).map((f) => JSON.parse(readFileSync(join(dir, sub, f), "utf8")) as CacheEntry))

// ---- independent computation -------------------------------------------------------------------

/** θ_i/λ_i and m, computed here from the definitions (not through plugins/rope or fitness.ts). */
function independentTable(factors: readonly number[], m: number, startTokens = 0): RopeTable {
  const theta = Float64Array.from({ length: HALF }, (_, i) => 1 / 10000 ** ((2 * i) / (2 * HALF)))
  return { rotaryDim: 2 * HALF, invFreq: theta.map((t, i) => t / factors[i]!), originalInvFreq: theta, startTokens, attentionScale: m }
}

const su = (L: number): number => (L <= L0 ? 1 : Math.sqrt(1 + Math.log(L / L0) / Math.log(L0)))

/** exp(mean over documents of mean NLL), documents cut to L−1 bytes after BOS = 256. */
async function independentPplTruncate(model: LlamaModel, table: RopeTable, L: number, samples: number, dataSeed: number, docLength: number): Promise<number> {
  let sum = 0
  for (let i = 0; i < samples; i++) {
    const doc = syntheticDocument({ tokenizer: byteTokenizer(), seed: dataSeed, length: docLength, tasks: { filler: 1 } }, i).ids
    const tokens = [256, ...doc.slice(0, L - 1)]
    expect(tokens.length).toBe(L)
    const lp = await model.logprobs(tokens, { rope: table })
    let nll = 0
    for (const x of lp) nll -= x
    sum += nll / lp.length
  }
  return Math.exp(sum / samples)
}

const source = (seed: number, docLength: number): SampleSource => ({
  tokenizer: byteTokenizer(),
  seed,
  document: (i, minTokens, tasks) => syntheticDocument({ tokenizer: byteTokenizer(), seed, length: Math.max(docLength, minTokens), tasks: tasks ?? { filler: 1 } }, i).ids,
})

// ---- tests -------------------------------------------------------------------------------------

describe("fitness plugins", () => {
  test("ppl-truncate and needle-ppl equal an independent computation from model.logprobs", async () => {
    const model = await loadLlama(await gpu(), modelDir)
    try {
      const L = 256
      const lambda = [1, 1, 1.5, 2, 3, 4, 4, 4]
      const table = independentTable(lambda, su(L))
      const got = await perplexity(model, pplTruncate.samples(source(3, L), {}, { samples: 2, length: L }), table)
      const want = await independentPplTruncate(model, table, L, 2, 3, L)
      expect(Math.abs(got - want) / want).toBeLessThan(1e-12)
      // A different table gives a different value (the table reaches the model).
      const other = await perplexity(model, pplTruncate.samples(source(3, L), {}, { samples: 2, length: L }), independentTable(new Array(HALF).fill(1), 1))
      expect(Math.abs(other - got)).toBeGreaterThan(1e-6)

      // needle-ppl: NLL on the answer digits only.
      const N = 512
      const nsamples = needlePpl.samples(source(5, N), needlePpl.resolveParams({}), { samples: 2, length: N })
      const needleGot = await perplexity(model, nsamples, table)
      let sum = 0
      for (let i = 0; i < 2; i++) {
        const doc = syntheticDocument({ tokenizer: byteTokenizer(), seed: 5, length: N, tasks: { filler: 1 } }, i).ids
        const s = needleSample({ tokenizer: byteTokenizer(), document: doc, seqLen: N, rng: Rng.seeded(5, 0x6e65, i) })
        expect(s.answer).toMatch(/^\d{7}$/)
        const lp = await model.logprobs(Array.from(s.ids), { rope: table })
        let nll = 0
        let n = 0
        for (let t = 0; t < N; t++) {
          if (s.labels[t] === IGNORE_LABEL) continue
          nll -= lp[t - 1]!
          n++
        }
        expect(n).toBe(7) // byte tokens of a 7-digit answer (the leading space is not scored)
        sum += nll / n
      }
      expect(Math.abs(needleGot - Math.exp(sum / 2)) / needleGot).toBeLessThan(1e-12)
    } finally {
      model.dispose()
    }
  }, TIMEOUT)
})

describe("short-context penalty and needle-ppl through the stage", () => {
  test("shortPenalty: F · exp(w · max(0, ln PPL_cand(L0) − ln PPL_base(L0))), keyed apart from the plain fitness", async () => {
    const cache = tmp()
    const w = 2
    // The base model interpolates 8x on its own (linear rope_scaling): candidates (λ ≤ 5) rotate faster at
    // L0 than it does, and on this random model that raises short perplexity, so the penalty bites.
    const linearDir = tmp()
    writeRandomModel(linearDir, { hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, vocab: 258, maxPositions: L0, seed: 11, ropeScaling: { rope_type: "linear", factor: 8 } })
    const r = await runStage({
      mode: "first", length: 256, samples: 2, strategyParams: { ...SMALL, iterations: 0 }, data: FILLER, cacheDir: cache,
      fitnessParams: { shortPenalty: { weight: w, samples: 2 } },
      mscale: 1, // m = 1, so only the factors move the short-context perplexity
    }, { model: linearDir })
    expect(r.result["evaluated"]).toBe(6)
    const entries = cacheEntries(cache)
    expect(entries.every((e) => (e.parts.fitness.params as { shortPenalty: { weight: number; length: number } }).shortPenalty.weight === w)).toBe(true)
    const model = await loadLlama(await gpu(), linearDir)
    try {
      let penalised = 0
      for (const e of entries) {
        const table = independentTable(e.parts.rope.factors, 1)
        const long = await independentPplTruncate(model, table, 256, 2, 7, 256)
        // At L0 the documents are the same ones (generated at 256 tokens), cut to 63 after BOS.
        const cand = await independentPplTruncate(model, table, L0, 2, 7, 256)
        const base = await independentPplTruncate(model, independentTable(new Array(HALF).fill(8), 1), L0, 2, 7, 256)
        const want = long * Math.exp(w * Math.max(0, Math.log(cand) - Math.log(base)))
        expect(Math.abs(e.fitness - want) / want).toBeLessThan(1e-12)
        if (cand > base * 1.0001) penalised++
      }
      expect(penalised).toBeGreaterThan(0) // the penalty did something on this model
    } finally {
      model.dispose()
    }
  }, TIMEOUT)

  test("needle-ppl as the search fitness (LongRoPE2 space with its critical dim)", async () => {
    const cache = tmp()
    const r = await runStage({
      mode: "first", length: 512, samples: 1, fitness: "needle-ppl", strategy: "longrope2",
      strategyParams: { ...SMALL, iterations: 1, criticalDim: 4 }, cacheDir: cache,
    })
    expect(r.result["evaluated"]).toBe(9)
    const f = r.factors.sets[1]!.factors as number[]
    // longrope2: geometric ramp below cd, strictly increasing from cd on.
    for (let i = 5; i < HALF; i++) expect(f[i]!).toBeGreaterThan(f[i - 1]!)
    expect(cacheEntries(cache).every((e) => e.parts.fitness.name === "needle-ppl")).toBe(true)
  }, TIMEOUT)
})

describe("search stage", () => {
  const cacheDir = tmp()
  const first: SearchParams = { mode: "first", length: 256, samples: 2, strategyParams: SMALL, data: FILLER, cacheDir }
  const firstRun = runStage(first)

  test("first: cached fitness values equal the independent computation; logs, CSVs and progress are written", async () => {
    const r = await firstRun
    expect(r.result["evaluated"]).toBe(12)
    expect(r.result["cached"]).toBe(0)
    const entries = cacheEntries(cacheDir)
    expect(entries.length).toBe(12)
    const model = await loadLlama(await gpu(), modelDir)
    try {
      for (const e of entries.slice(0, 3)) {
        const want = await independentPplTruncate(model, independentTable(e.parts.rope.factors, su(256)), 256, 2, 7, 256)
        expect(e.parts.rope.attentionScale).toBeCloseTo(su(256), 14)
        expect(Math.abs(e.fitness - want) / want).toBeLessThan(1e-12)
      }
    } finally {
      model.dispose()
    }
    // The best is the minimum of everything evaluated, and it is what the factor set carries.
    const best = Math.min(...entries.map((e) => e.fitness))
    expect((r.result["best"] as number[])[0]).toBe(best)
    const bestEntry = entries.find((e) => e.fitness === best)!
    expect(r.factors.sets.map((s) => s.max_length)).toEqual([L0, 256])
    expect(r.factors.sets[0]!.factors).toEqual(new Array(HALF).fill(1))
    expect(r.factors.sets[1]!.factors).toEqual([...bestEntry.parts.rope.factors])
    expect(factorsFromCsv(readFileSync(join(r.logDir, "result_final.csv"), "utf8"), HALF)).toEqual([...bestEntry.parts.rope.factors])
    const log = JSON.parse(readFileSync(join(r.logDir, "search-log.json"), "utf8")) as SearchLog
    expect(log.entries.map((e) => e.generation)).toEqual([1, 2, 3])
    expect(log.entries.map((e) => e.evaluations)).toEqual([6, 9, 12])
    const lr = JSON.parse(readFileSync(join(r.logDir, "longrope-log.json"), "utf8")) as { iteration: number; history: unknown[] }
    expect(lr.history.length).toBe(12)
    expect(existsSync(join(r.logDir, "result_it003.csv"))).toBe(true)
    expect(r.reports.some((n) => /generation 3\/3, 12 evaluated \+ 0 cached, best .*ETA/.test(n))).toBe(true)
  }, TIMEOUT)

  test("a rerun evaluates nothing (cache), and another strategy reuses the cached init vectors", async () => {
    const r1 = await firstRun
    const counter = { calls: 0 }
    const r2 = await runStage(first, { counter })
    expect(r2.result["evaluated"]).toBe(0)
    expect(r2.result["cached"]).toBe(12)
    expect(counter.calls).toBe(0)
    expect(r2.factors.sets).toEqual(r1.factors.sets)

    const r3 = await runStage({ ...first, strategy: "successive-halving", strategyParams: { elites: 2, offspring: 3, initMutants: 2, maxFullEvaluations: 7, eta: 2 } })
    // PI, NTK and YaRN-init at s = 4 were scored by the evolutionary run.
    expect(r3.result["cached"] as number).toBeGreaterThanOrEqual(3)
  }, TIMEOUT)

  test("interrupted mid-batch and restarted = uninterrupted (same seed)", async () => {
    const reference = await firstRun
    const cpDir = tmp()
    const cache2 = tmp()
    const params = { ...first, cacheDir: cache2 }
    // Interrupt during generation 2's batch: after the 17th forward (6·2 for generation 1, then 2.5 candidates).
    const stop = Effect.runSync(Deferred.make<void>())
    const ctx = context(params, { model: modelDir }, cpDir, [])
    const rt = await gpu()
    const fiber = Effect.runFork(
      runSearchStage(ctx).pipe(
        Effect.provideService(ModelLoader, countingLoader({ calls: 0 }, (n) => {
          if (n === 17) Effect.runSync(Deferred.succeed(stop, undefined))
        })),
        Effect.provideService(Gpu, rt),
      ),
    )
    await Effect.runPromise(Deferred.await(stop))
    await Effect.runPromise(Fiber.interrupt(fiber))
    expect(existsSync(ctx.outputs["factors"]!)).toBe(false)
    const cp = JSON.parse(readFileSync(join(cpDir, "search.json"), "utf8")) as { state: { generation: number } }
    expect(cp.state.generation).toBe(1)
    const partial = cacheEntries(cache2).length
    expect(partial).toBeGreaterThanOrEqual(8) // generation 1 plus the candidates finished before the interrupt

    const resumed = await runStage(params, { checkpointDir: cpDir })
    expect(resumed.reports.some((l) => l.includes("resuming at generation 1"))).toBe(true)
    expect(resumed.result["evaluated"]).toBe(12 - partial)
    expect(resumed.result["cached"]).toBe(partial - 6)
    expect(resumed.factors.sets).toEqual(reference.factors.sets)
    expect(resumed.result["best"]).toEqual(reference.result["best"])
    const strip = (l: SearchLog) => l.entries.map(({ seconds: _s, ...e }) => e)
    const read = (d: string) => JSON.parse(readFileSync(join(d, "search-log.json"), "utf8")) as SearchLog
    expect(strip(read(resumed.logDir))).toEqual(strip(read(reference.logDir)))
    expect(readFileSync(join(resumed.logDir, "longrope-log.json"), "utf8")).toBe(readFileSync(join(reference.logDir, "longrope-log.json"), "utf8"))
  }, TIMEOUT)

  test("first: generation 0 holds PI, NTK, YaRN-init and HF YaRN; with the m gene, HF YaRN carries its own 0.1·ln s + 1", async () => {
    const geometry = { rotaryDim: 2 * HALF, base: 10000, originalLength: L0 }
    const hf = Array.from(yarnFactors(geometry, 4))
    const hasVector = (es: CacheEntry[], f: number[], m: number) =>
      es.some((e) => e.parts.rope.factors.every((x, i) => Math.abs(x - f[i]!) < 1e-12) && Math.abs(e.parts.rope.attentionScale - m) < 1e-12)
    // Without the gene every member runs at the policy's m ("su").
    await firstRun
    expect(hasVector(cacheEntries(cacheDir), hf, su(256))).toBe(true)
    expect(hasVector(cacheEntries(cacheDir), Array.from(yarnInitFactors(geometry, 4)), su(256))).toBe(true)
    const dir = tmp()
    const mGene = { min: 1, max: 1.5, step: 0.01, sigma: 0.03 }
    await runStage({ ...first, cacheDir: dir, strategyParams: { ...SMALL, iterations: 0, attentionScale: mGene } })
    const es = cacheEntries(dir)
    expect(hasVector(es, hf, yarnGetMscale(4))).toBe(true)
    // the other init vectors start from the policy's m
    expect(hasVector(es, Array.from(yarnInitFactors(geometry, 4)), su(256))).toBe(true)
  }, TIMEOUT)

  test("a fitness contributed by a plugin is found through the registry and cached under its own name", async () => {
    await firstRun
    const doubled: FitnessPlugin<PplTruncateParams> = {
      ...pplTruncate,
      name: "double-ppl",
      description: "2 × ppl-truncate (a test plugin)",
      evaluate: async (model, samples, table, chunk) => 2 * (await perplexity(model, samples, table, chunk)),
    }
    const registry = new Registry()
    expect(registry.register(definePlugin({ name: "test-fitness", version: "1.0.0", fitness: [doubled] }), "test")).toBeUndefined()
    const reports: string[] = []
    const ctx = context({ ...first, fitness: "double-ppl", strategyParams: { ...SMALL, iterations: 0 } }, { model: modelDir }, tmp(), reports)
    const r = (await Effect.runPromise(
      runSearchStage(ctx).pipe(Effect.provideService(ModelLoader, countingLoader({ calls: 0 })), Effect.provideService(Gpu, await gpu()), Effect.provideService(PluginRegistry, registry)),
    )) as Record<string, unknown>
    expect(r["evaluated"]).toBe(6) // nothing shared with ppl-truncate's entries
    const all = cacheEntries(cacheDir)
    const plain = all.filter((e) => e.parts.fitness.name === "ppl-truncate")
    const twice = all.filter((e) => e.parts.fitness.name === "double-ppl")
    expect(twice.length).toBe(6)
    // The init vectors (PI, NTK, YaRN) are the same genomes in both runs: exactly twice the value.
    let same = 0
    for (const e of twice) {
      const q = plain.find((x) => JSON.stringify(x.parts.rope) === JSON.stringify(e.parts.rope))
      if (q === undefined) continue
      expect(e.fitness).toBe(2 * q.fitness)
      same++
    }
    expect(same).toBeGreaterThanOrEqual(3)
  }, TIMEOUT)

  test("the factor set round-trips through plugins/rope formats and resolveRope", async () => {
    const r = await firstRun
    const text = formatFactorSetFile(r.factors)
    const again = parseFactorSetFile(text)
    expect(again).toEqual(r.factors)
    expect(again.provenance.method).toBe("search")
    expect(again.provenance.lengths).toEqual([256])
    const spec = ropeSpecFromConfig(JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")))
    const at = resolveRope({ ...spec, scaling: factorSetToScaling(again) })
    const best = again.sets[1]!.factors as number[]
    const want = independentTable(best, su(256))
    const t = at(256)
    expect(t.attentionScale).toBeCloseTo(want.attentionScale, 14)
    for (let i = 0; i < HALF; i++) expect((t.invFreq as Float64Array)[i]! / (want.invFreq as Float64Array)[i]!).toBeCloseTo(1, 12)
    // Short inputs get the identity set.
    expect(Array.from(at(64).invFreq as Float64Array)).toEqual(Array.from(want.originalInvFreq))
    // HF two-set export: short = identity, long = the searched set.
    const hf = factorSetToHfLongrope(again)
    expect(hf["long_factor"]).toEqual(best)
    expect(hf["short_factor"]).toEqual(new Array(HALF).fill(1))
  }, TIMEOUT)

  test("second: relative factors multiply the fine-tuned ones, λ_rel = 1 among the first; the product is saved", async () => {
    const ftDir = tmp()
    const lambdaFt = Array.from(yarnInitFactors({ rotaryDim: 2 * HALF, base: 10000, originalLength: L0 }, 4))
    const ft: FactorSetFile = {
      format: "ropeway-factor-set",
      version: 1,
      model: { rotary_dim: 2 * HALF, base: 10000, original_max_position_embeddings: L0 },
      sets: [
        { max_length: L0, factors: new Array(HALF).fill(1) },
        { max_length: 256, factors: lambdaFt },
      ],
      provenance: { method: "test", run_id: null, lengths: [256], scale: 4, created: "2026-01-01T00:00:00Z" },
    }
    const ftFile = join(ftDir, "rope.json")
    writeFileSync(ftFile, formatFactorSetFile(ft))
    const cache = tmp()
    const r = await runStage({ mode: "second", length: 512, samples: 1, strategyParams: SMALL, data: FILLER, cacheDir: cache }, { inputs: { factors: ftFile } })
    expect(r.factors.sets.map((s) => s.max_length)).toEqual([L0, 256, 512])
    expect(r.factors.sets[1]!.factors).toEqual(lambdaFt)
    const rel = (r.result["genome"] as { factors: number[] }[])[0]!.factors
    const saved = r.factors.sets[2]!.factors as number[]
    for (let i = 0; i < HALF; i++) expect(saved[i]).toBe(rel[i]! * lambdaFt[i]!)
    // Relative factors live at s = 512/256 = 2 (dim_mono bounds [1, 3]), the product well above that.
    expect(Math.max(...rel)).toBeLessThanOrEqual(3)
    expect(Math.max(...saved)).toBeGreaterThan(3)
    // The model was evaluated with the product: the best cache entry holds it.
    const best = (r.result["best"] as number[])[0]
    expect(cacheEntries(cache).find((e) => e.fitness === best)!.parts.rope.factors).toEqual(saved)
    // λ_rel = 1 (the fine-tuned set as it is) was among the candidates scored
    expect(cacheEntries(cache).some((e) => JSON.stringify(e.parts.rope.factors) === JSON.stringify(lambdaFt))).toBe(true)
    expect(factorsFromCsv(readFileSync(join(r.logDir, "result_final.csv"), "utf8"))).toEqual(saved)
  }, TIMEOUT)

  test("readjust: short searches make the length-bucketed sets table the model carries", async () => {
    const r0 = await firstRun
    const inDir = tmp()
    const inFile = join(inDir, "rope.json")
    writeFileSync(inFile, formatFactorSetFile(r0.factors))
    const r = await runStage(
      { mode: "readjust", lengths: [128, 64], samples: 1, strategyParams: { ...SMALL, iterations: 1 }, data: FILLER, cacheDir: tmp() },
      { inputs: { factors: inFile } },
    )
    expect(r.factors.sets.map((s) => s.max_length)).toEqual([64, 128, 256])
    expect(r.factors.sets[2]!.factors).toEqual(r0.factors.sets[1]!.factors)
    const genomes = r.result["genome"] as { factors: number[] }[]
    expect(r.factors.sets[0]!.factors).toEqual(genomes[0]!.factors)
    expect(r.factors.sets[1]!.factors).toEqual(genomes[1]!.factors)
    expect(existsSync(join(r.logDir, "64", "search-log.json"))).toBe(true)
    expect(existsSync(join(r.logDir, "128", "result_final.csv"))).toBe(true)
    const spec = ropeSpecFromConfig(JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")))
    const at = resolveRope({ ...spec, scaling: factorSetToScaling(r.factors) })
    expect(at(100).reason).toContain("set 1 of 3")
    expect(at(1000).reason).toContain("beyond the last set")
  }, TIMEOUT)
})
