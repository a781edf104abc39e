/**
 * The paper recipes (workflows/paper/*.yaml): they need the user's weights, so here they are checked without
 * them. `plan` must validate each one (the only problem: the model folder is absent), the nested params the
 * loader passes through unchecked (strategyParams, fitnessParams, data, the optimizer) must be accepted by the
 * plugins that read them at run time, the papers' hyper-parameters must be the ones written, and `run` must
 * stop at once, before any step, naming the missing folder (or, with a config but no weights, the missing
 * weight files).
 */
import { describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { loadWorkflow, type Plan, type PlanStep, planWorkflow } from "../../cli/workflow.ts"
import { defaultEvolutionaryParams } from "../../plugins/search/evolutionary.ts"
import { getFitness } from "../../plugins/search/fitness.ts"
import { getStrategy } from "../../plugins/search/index.ts"
import type { SearchContext } from "../../plugins/search/types.ts"
import { FINETUNE_DEFAULTS } from "../../stages/finetune.ts"
import { optimizerAndSchedule, type TrainHyper as TrainParams } from "../../training/config.ts"

const ROOT = resolve(import.meta.dirname, "../..")
const DIR = join(ROOT, "workflows/paper")
const BUN = join(ROOT, "node_modules/.bin/bun")

interface Recipe {
  readonly file: string
  /** The model folder the recipe names, relative to the repository root. */
  readonly model: string
  /** Rotary dims / 2 and L0 of that model. */
  readonly dims: number
  readonly L0: number
  /** Step name -> stage, in run order. */
  readonly steps: ReadonlyArray<readonly [string, string]>
}

const v1Steps = [
  ["search-128k", "search"], ["search-256k", "search"], ["finetune-128k", "finetune-factors"], ["finetune-256k", "finetune-factors"],
  ["second-512k", "search-factors"], ["second-1024k", "search-factors"], ["second-2048k", "search-factors"], ["readjust", "search-factors"],
  ["table-512k", "merge-factors"], ["table", "merge-factors"], ["apply", "apply-factors"], ["evaluate-proofpile", "evaluate"], ["evaluate-proofpile-256k", "evaluate"], ["evaluate-books3-long", "evaluate"],
  ["evaluate-books3", "evaluate"], ["evaluate-pg19-8k", "evaluate"], ["evaluate-pg19", "evaluate"], ["export", "export"],
] as const

const RECIPES: readonly Recipe[] = [
  { file: "llama2-7b-2048k.yaml", model: "models/Llama-2-7b-hf", dims: 64, L0: 4096, steps: v1Steps },
  { file: "mistral-7b-2048k.yaml", model: "models/Mistral-7B-v0.1", dims: 64, L0: 4096, steps: [["full-attention", "model-config"], ...v1Steps] },
  {
    file: "llama3-8b-128k-longrope2.yaml", model: "models/Meta-Llama-3-8B", dims: 64, L0: 8192,
    steps: [["search", "search"], ["finetune", "finetune-factors"], ["evaluate-proofpile", "evaluate"], ["evaluate-needle", "evaluate"], ["export", "export"]],
  },
  {
    file: "phi3-mini-128k.yaml", model: "models/Phi-3-mini-4k-instruct", dims: 48, L0: 4096,
    steps: [["full-attention", "model-config"], ["search", "search"], ["readjust", "search-factors"], ["export", "export"]],
  },
]

const plans = new Map<string, Plan>()
const planOf = async (r: Recipe): Promise<Plan> => {
  let p = plans.get(r.file)
  if (p === undefined) {
    const store = mkdtempSync(join(tmpdir(), "ropeway-paper-plan-"))
    try {
      p = await Effect.runPromise(Effect.flatMap(loadWorkflow(join(DIR, r.file)), (wf) => planWorkflow(wf, { store })))
    } finally {
      removeTree(store)
    }
    plans.set(r.file, p)
  }
  return p
}

type Params = Record<string, unknown>
const step = (p: Plan, name: string): PlanStep & { params: Params } => {
  const s = p.steps.find((x) => x.name === name)
  if (s === undefined) throw new Error(`${p.file}: no step ${name}`)
  return s as PlanStep & { params: Params }
}

/** The scale a search step's strategy sees (the stage's own arithmetic, method notes §2–§3). */
const searchScale = (p: Params, L0: number): number => {
  const mode = p["mode"] ?? "first"
  if (mode === "first") return (p["length"] as number) / L0
  if (mode === "second") return (p["length"] as number) / 262144
  return Math.max(1, Math.max(...(p["lengths"] as number[])) / L0)
}

describe("paper recipes: plan without the weights", () => {
  for (const r of RECIPES) {
    test(r.file, async () => {
      const plan = await planOf(r)
      const modelDir = join(ROOT, r.model)
      expect(existsSync(modelDir)).toBe(false) // the test is about a checkout without weights
      // the engine's complaints: the absent model folder, then each absent corpus with its place in the file
      // (resolved against the workflow file: ../../data/X is <repo>/data/X); every step is blocked or waits
      expect(plan.problems[0]).toBe(`model folder not found: ${modelDir}`)
      const corpusSteps = plan.steps.filter((s) => ((s.params as Params)["data"] as Params | undefined)?.["source"] === "corpus")
      expect(corpusSteps.length).toBeGreaterThan(0)
      const file = join(DIR, r.file)
      const text = readFileSync(file, "utf8").split("\n")
      expect(plan.problems.slice(1).length).toBe(corpusSteps.length)
      for (const [i, s] of corpusSteps.entries()) {
        const path = ((s.params as Params)["data"] as Params)["path"] as string
        expect(path.startsWith(join(ROOT, "data") + "/")).toBe(true)
        const m = new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:(\\d+):(\\d+): steps\\.${s.name}\\.params\\.data\\.path: corpus not found: (.*)$`).exec(plan.problems[i + 1]!)
        expect(m).not.toBeNull()
        expect(m![3]).toBe(path)
        // the position is the path's text in the file
        expect(text[Number(m![1]) - 1]!.slice(Number(m![2]) - 1)).toStartWith(path.replace(`${ROOT}/`, "../../"))
      }
      expect(plan.model).toBe(modelDir)
      expect(plan.steps.map((s) => [s.name, s.stage])).toEqual(r.steps.map(([n, s]) => [n, s]))
      for (const s of plan.steps) expect(["missing-input", "pending"]).toContain(s.status)
      expect(plan.steps.filter((s) => s.status === "missing-input").length).toBeGreaterThan(0)
    })
  }
})

describe("paper recipes: nested params are accepted by the plugins that read them", () => {
  for (const r of RECIPES) {
    test(r.file, async () => {
      const plan = await planOf(r)
      for (const s of plan.steps) {
        const p = s.params as Params
        const where = `${r.file} ${s.name}`
        if (s.stage === "search" || s.stage === "search-factors") {
          const strategy = getStrategy((p["strategy"] as string | undefined) ?? "evolutionary")
          const length = (p["length"] as number | undefined) ?? Math.max(...((p["lengths"] as number[] | undefined) ?? [r.L0]))
          const ctx: SearchContext = { dims: r.dims, scale: searchScale(p, r.L0), fidelity: { samples: (p["samples"] as number | undefined) ?? 5, length }, init: [], seed: 42 }
          const sp = (p["strategyParams"] ?? {}) as Params
          // the strategies ignore keys they do not know: a typo would silently run the default
          const known = Object.keys(defaultEvolutionaryParams(ctx))
          expect({ where, unknown: Object.keys(sp).filter((k) => !known.includes(k)) }).toEqual({ where, unknown: [] })
          expect(() => strategy.resolveParams(ctx, sp)).not.toThrow()
          const fitness = getFitness((p["fitness"] as string | undefined) ?? "ppl-truncate")
          expect(fitness).toBeDefined()
          const { shortPenalty: _, ...fp } = (p["fitnessParams"] ?? {}) as Params
          expect(() => fitness!.resolveParams(fp)).not.toThrow()
          const data = p["data"] as Params
          expect({ where, keys: Object.keys(data).filter((k) => !["source", "path", "field", "seed", "tasks"].includes(k)) }).toEqual({ where, keys: [] })
          expect(data["source"]).toBe("corpus")
          expect(typeof data["path"]).toBe("string")
          if (p["mode"] === "readjust") expect(Math.max(...(p["lengths"] as number[]))).toBeLessThan(131072)
        }
        if (s.stage === "finetune" || s.stage === "finetune-factors") {
          expect(() => optimizerAndSchedule("finetune", p as unknown as TrainParams, FINETUNE_DEFAULTS)).not.toThrow()
          const data = p["data"] as Params
          expect({ where, keys: Object.keys(data).filter((k) => !["source", "path", "field", "seed"].includes(k)) }).toEqual({ where, keys: [] })
          expect(data["source"]).toBe("corpus")
        }
        if (s.stage === "evaluate") {
          expect((p["data"] as Params)["source"]).toBe("corpus")
          expect(p["tokens"] as number).toBeGreaterThanOrEqual(Math.max(...(p["lengths"] as number[])))
          // a stride past the window only in the Books3 protocol (§5.1: a window every 262144 tokens)
          const stride = p["stride"] as number | undefined
          if (stride !== undefined && stride >= Math.min(...(p["lengths"] as number[]))) expect({ where, stride }).toEqual({ where, stride: 262144 })
        }
      }
    })
  }
})

const evo = { populationSize: 64, iterations: 40, parents: 32, mutants: 16, crossovers: 16, step: 0.01 }

describe("paper recipes: the papers' hyper-parameters and wiring", () => {
  for (const r of RECIPES.filter((x) => x.file.includes("2048k"))) {
    test(`${r.file}: LongRoPE's progressive recipe`, async () => {
      const p = await planOf(r)
      const model = join(ROOT, r.model)
      for (const [name, length] of [["search-128k", 131072], ["search-256k", 262144]] as const) {
        const s = step(p, name)
        expect(s.inputs).toEqual({ model })
        expect(s.params).toMatchObject({ mode: "first", length, samples: 5, fitness: "ppl-truncate", strategy: "evolutionary", strategyParams: { space: "dim_mono", ...evo } })
      }
      const mistral = r.file.startsWith("mistral")
      if (mistral) {
        // LongRoPE's reading of Mistral (§2.3, §2.5): L0 = the 4096 window, YaRN-init β 128/2, the window disabled
        for (const name of ["search-128k", "search-256k"]) {
          expect(step(p, name).params).toMatchObject({ originalLength: 4096, betaFast: 128, betaSlow: 2, slidingWindow: null })
        }
        for (const name of ["second-512k", "second-1024k", "second-2048k", "readjust"]) expect(step(p, name).params).toMatchObject({ betaFast: 128, betaSlow: 2 })
        expect(step(p, "full-attention").inputs).toEqual({ model })
        expect(step(p, "full-attention").params).toEqual({ set: { sliding_window: null } })
      }
      const ft128 = step(p, "finetune-128k")
      expect(ft128.inputs).toEqual({ model: mistral ? "full-attention.model" : model, factors: "search-128k.factors" })
      expect(ft128.params).toMatchObject({ steps: 400 })
      const ft256 = step(p, "finetune-256k")
      expect(ft256.inputs).toEqual({ model: "finetune-128k.model", factors: "search-256k.factors" })
      expect(ft256.params).toMatchObject({ steps: 600 })
      if (r.file.startsWith("llama2")) {
        const opt = { lr: 2e-5, schedule: "linear", warmup: 20, beta1: 0.9, beta2: 0.999, clip: 1, weightDecay: 0, batch: 32 }
        expect(ft128.params).toMatchObject({ seqLen: 131072, ...opt })
        expect(ft256.params).toMatchObject({ seqLen: 262144, ...opt })
      } else {
        for (const s of [ft128, ft256]) expect(s.params).toMatchObject({ seqLen: 16384, lr: 1e-6, schedule: "constant", batch: 64 })
      }
      for (const [name, length] of [["second-512k", 524288], ["second-1024k", 1048576], ["second-2048k", 2097152]] as const) {
        const s = step(p, name)
        expect(s.inputs).toEqual({ model: "finetune-256k.model", factors: "search-256k.factors" })
        expect(s.params).toMatchObject({ mode: "second", length, samples: 3, strategyParams: evo })
      }
      const re = step(p, "readjust")
      expect(re.inputs).toEqual({ model: "finetune-256k.model", factors: "second-2048k.factors" })
      expect(re.params).toMatchObject({ mode: "readjust", lengths: [4096, 8192] })
      // the final table: readjust's [4k, 8k, 256k, 2048k] plus the 512k and 1024k second searches' own sets
      expect(step(p, "table-512k").inputs).toEqual({ factors: "readjust.factors", extra: "second-512k.factors" })
      expect(step(p, "table-512k").params).toEqual({ take: [524288] })
      expect(step(p, "table").inputs).toEqual({ factors: "table-512k.factors", extra: "second-1024k.factors" })
      expect(step(p, "table").params).toEqual({ take: [1048576] })
      expect(step(p, "apply").inputs).toEqual({ model: "finetune-256k.model", factors: "table.factors" })
      for (const s of p.steps.filter((x) => x.stage === "evaluate")) expect(s.inputs).toEqual({ model: "apply.model" })
      const pp = step(p, "evaluate-proofpile")
      expect(pp.params).toMatchObject({ lengths: [4096, 8192, 32768, 65536, 98304, 131072], protocols: ["truncate"], samples: 10, tokens: 131072 })
      expect((pp.params["passkey"] as Params)["trials"]).toBe(10)
      expect((pp.params["passkey"] as Params)["lengths"]).toContain(2097152)
      expect(step(p, "evaluate-books3-long").params).toMatchObject({ protocols: ["sliding"], stride: 262144, samples: 20, tokens: 2097152 })
      expect(step(p, "evaluate-books3").params).toMatchObject({ lengths: [8192, 16384, 32768, 65536, 131072, 262144], protocols: ["sliding"], stride: 262144, samples: 20 })
      expect(step(p, "evaluate-pg19-8k").params).toMatchObject({ lengths: [8192], protocols: ["sliding"], stride: 256, samples: 100 })
      expect(step(p, "evaluate-pg19").params).toMatchObject({ lengths: [65536, 131072], protocols: ["sliding"], stride: 4096, samples: 100, minTokens: 65536 })
      expect(step(p, "export").inputs).toEqual({ model: "finetune-256k.model", factors: "table.factors" })
    })
  }

  test("llama3-8b-128k-longrope2.yaml: LongRoPE2", async () => {
    const p = await planOf(RECIPES[2]!)
    const s = step(p, "search")
    expect(s.params).toMatchObject({ mode: "first", length: 131072, strategy: "longrope2", fitness: "needle-ppl", samples: 10, strategyParams: { criticalDim: 33, sMin: 16, sMax: 32, ...evo } })
    const ft = step(p, "finetune")
    expect(ft.inputs).toEqual({ model: join(ROOT, "models/Meta-Llama-3-8B"), factors: "search.factors" })
    expect(ft.params).toMatchObject({
      mixedContext: true, seqLen: 131072, steps: 2250, lr: 2e-5, beta1: 0.9, beta2: 0.95, warmup: 40, schedule: "cosine", clip: 1, weightDecay: 0, batch: 32, scalingFormat: "longrope",
    })
    expect(step(p, "evaluate-needle").params["needle"]).toBeDefined()
    expect(step(p, "export").inputs).toEqual({ model: "finetune.model", factors: "search.factors" })
  })

  test("phi3-mini-128k.yaml: short/long pair", async () => {
    const p = await planOf(RECIPES[3]!)
    expect(step(p, "full-attention").inputs).toEqual({ model: join(ROOT, "models/Phi-3-mini-4k-instruct") })
    expect(step(p, "full-attention").params).toEqual({ set: { sliding_window: null } })
    expect(step(p, "search").inputs).toEqual({ model: "full-attention.model" })
    expect(step(p, "search").params).toMatchObject({ mode: "first", length: 131072, samples: 5, strategyParams: evo })
    expect(step(p, "readjust").inputs).toEqual({ model: "full-attention.model", factors: "search.factors" })
    expect(step(p, "readjust").params).toMatchObject({ mode: "readjust", lengths: [4096] })
    expect(step(p, "export").inputs).toEqual({ model: "full-attention.model", factors: "readjust.factors" })
    expect(step(p, "export").params).toMatchObject({ formats: ["hf", "csv", "gguf"] })
  })
})

/** `bun cli/main.ts run FILE --store STORE`: exit code, output, seconds. */
const runCli = async (file: string, store: string) => {
  const t0 = performance.now()
  const proc = Bun.spawn([BUN, "cli/main.ts", "run", file, "--store", store], {
    cwd: ROOT,
    env: { ...process.env, EGL_PLATFORM: "surfaceless" },
    stdout: "pipe",
    stderr: "pipe",
  })
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  return { code, text: `${out}\n${err}`, seconds: (performance.now() - t0) / 1000 }
}

describe("paper recipes: run without the weights stops at once", () => {
  for (const r of RECIPES) {
    test(`${r.file}: no model folder`, async () => {
      const store = mkdtempSync(join(tmpdir(), "ropeway-paper-run-"))
      try {
        const { code, text, seconds } = await runCli(join(DIR, r.file), store)
        expect(code).not.toBe(0)
        expect(text).toContain(`model folder not found: ${join(ROOT, r.model)}`)
        expect(seconds).toBeLessThan(10)
        expect(readdirSync(store)).toEqual([]) // no run folder, no step started
      } finally {
        removeTree(store)
      }
    })
  }

  // The model folder is there but the corpora are not: the run stops before any step, listing each with its line.
  test("llama2-7b-2048k.yaml: missing corpora stop the run before any step", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "ropeway-paper-nocorpus-"))
    try {
      mkdirSync(join(tmp, "workflows/paper"), { recursive: true })
      const file = join(tmp, "workflows/paper/llama2-7b-2048k.yaml")
      cpSync(join(DIR, "llama2-7b-2048k.yaml"), file)
      mkdirSync(join(tmp, "models/Llama-2-7b-hf"), { recursive: true })
      const { code, text, seconds } = await runCli(file, join(tmp, "store"))
      expect(code).not.toBe(0)
      expect(text).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+: steps\\.search-128k\\.params\\.data\\.path: corpus not found: ${join(tmp, "data/pg19/validation")}`))
      expect(text).toContain(`corpus not found: ${join(tmp, "data/books3/test")}`)
      expect(existsSync(join(tmp, "store"))).toBe(false) // nothing ran
      expect(seconds).toBeLessThan(10)
    } finally {
      removeTree(tmp)
    }
  })

  // A folder with config.json but no weights: the first step stops before any GPU work, naming the files.
  test("llama2-7b-2048k.yaml: config.json but no weights", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "ropeway-paper-noweights-"))
    try {
      mkdirSync(join(tmp, "workflows/paper"), { recursive: true })
      cpSync(join(DIR, "llama2-7b-2048k.yaml"), join(tmp, "workflows/paper/llama2-7b-2048k.yaml"))
      // the corpora, relative to the workflow file: empty folders pass the up-front check
      for (const c of ["pg19/validation", "pg19/test", "redpajama-1t-sample", "books3/validation", "books3/test", "proof-pile/test"]) mkdirSync(join(tmp, "data", c), { recursive: true })
      const modelDir = join(tmp, "models/Llama-2-7b-hf")
      mkdirSync(modelDir, { recursive: true })
      writeFileSync(join(modelDir, "config.json"), JSON.stringify({
        architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: 4096, intermediate_size: 11008, num_attention_heads: 32,
        num_hidden_layers: 32, num_key_value_heads: 32, max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 10000, vocab_size: 32000,
      }))
      const { code, text, seconds } = await runCli(join(tmp, "workflows/paper/llama2-7b-2048k.yaml"), join(tmp, "store"))
      expect(code).not.toBe(0)
      expect(text).toContain(modelDir)
      expect(text).toMatch(/no weights: neither model\.safetensors nor model\.safetensors\.index\.json exists/)
      expect(text).toContain('step "search-128k"')
      expect(seconds).toBeLessThan(10)
    } finally {
      removeTree(tmp)
    }
  })
})
