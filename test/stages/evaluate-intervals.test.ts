// Intervals in `evaluate` through runWorkflow with a stub model: every perplexity row carries the bootstrap
// interval of its own windows (recomputed here from the reference loop's per-document NLLs), every passkey
// and short row its interval; model+pi / model+yarn score the factor set with PI / YaRN on top; a
// `sideBySide` group marks the rows; metrics.json written before intervals still reads.
import { afterAll, describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { RopeTable } from "../../kernels/rope-table.ts"
import { layerCollect, loadWorkflow, runWorkflow } from "../../cli/workflow.ts"
import { BYTE_BOS, byteTokenizer } from "../../plugins/data/tokenizer.ts"
import { syntheticDocument } from "../../plugins/data/synthetic.ts"
import { perplexityInterval, wilson } from "../../plugins/eval/intervals.ts"
import { emptyMetrics, mergeMetrics, parseMetrics, readMetrics } from "../../plugins/eval/metrics.ts"
import { onTopScaling } from "../../plugins/eval/protocols.ts"
import { readLlamaConfig } from "../../plugins/models/llama/config.ts"
import type { LoadedModel } from "../../plugins/models/family.ts"
import { TINY_DIR } from "../../plugins/models/tiny/tiny.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { ModelLoader } from "../../stages/kit.ts"

const dirs: string[] = []
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), "ropeway-eval-iv-"))
  dirs.push(d)
  return d
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

/** ln p(next) depends on the target, its position and the table (as evaluate.test.ts's stub). */
const stubLp = (target: number, pos: number, t: RopeTable): number => {
  const f = t.invFreq as Float64Array
  // a fast and a slow dimension both count, so tables differing in either give different numbers
  return -(1 + ((target * 31 + pos) % 11) / 10) * (1 + (0.15 * Math.sin(pos * f[1]!) + 0.15 * Math.sin(pos * f[f.length - 1]! * 40)) * t.attentionScale)
}

const stub = ModelLoader.of({
  load: async (dir): Promise<LoadedModel> => {
    const config = readLlamaConfig(dir)
    return {
      config,
      rope: resolveRope(config.rope),
      logprobs: async (tokens, { rope }) => Float64Array.from({ length: tokens.length - 1 }, (_, i) => stubLp(tokens[i + 1]!, i, rope)),
      dispose: () => {},
    }
  },
})

/** Runs one evaluate step with these params (a YAML flow mapping) on `model` (tiny, or a folder in `dir`). */
const run = async (dir: string, params: string, model = "tiny") => {
  const file = join(dir, "wf.yaml")
  writeFileSync(file, `name: iv\nseed: 5\nmodel: ${model}\nsteps:\n  evaluate:\n    stage: evaluate\n    inputs: { model: model }\n    params: ${params}\n`)
  const r = await Effect.runPromise(
    Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
      Effect.provide(layerCollect([])),
      Effect.provideService(ModelLoader, stub),
    ),
  )
  const step = r.manifest.steps.find((s) => s.stage === "evaluate")!
  expect(step.status).toBe("done")
  return { metrics: readMetrics(step.outputs["metrics"]!.path), model: r.manifest.steps[0]!.outputs["model"]?.path }
}

/** Per-document NLL of the truncate window (BOS + the first L−1 tokens) under a table. */
const docNll = (doc: readonly number[], L: number, t: RopeTable) => {
  const seq = [BYTE_BOS, ...doc.slice(0, L - 1)]
  let sum = 0
  for (let p = 1; p < seq.length; p++) sum -= stubLp(seq[p]!, p - 1, t)
  return { sum, count: seq.length - 1 }
}

describe("intervals on every perplexity", () => {
  test("the value and its bootstrap interval over documents, recomputed from the reference windows; nll recorded; group marked", async () => {
    const dir = temp()
    const { metrics: m, model } = await run(dir, `{ lengths: [256, 512], methods: [none, yarn], samples: 3, tokens: 600, originalLength: 256, sideBySide: base models, intervals: { replicates: 300, level: 0.9 } }`)
    const tok = byteTokenizer()
    const docs = [0, 1, 2].map((i) => syntheticDocument({ tokenizer: tok, seed: 5, length: 600 }, i).ids)
    const config = readLlamaConfig(model!)
    expect(m.perplexity.length).toBe(4)
    for (const r of m.perplexity) {
      const scaling = r.method === "yarn" ? { rope_type: "yarn", factor: Math.max(1, r.length / 256), original_max_position_embeddings: 256 } : undefined
      const table = resolveRope({ ...config.rope, originalMaxPositions: 256, scaling })(r.length)
      const windows = docs.map((d, i) => ({ doc: i, ...docNll(d, r.length, table) }))
      const want = perplexityInterval(windows, "window-mean", { seed: 5, replicates: 300, level: 0.9 })
      expect(r.value).toBeCloseTo(want.value, 9)
      expect(r.interval!.lo).toBeCloseTo(want.lo, 9)
      expect(r.interval!.hi).toBeCloseTo(want.hi, 9)
      expect(r.interval).toMatchObject({ n: 3, unit: "documents", level: 0.9, replicates: 300, seed: 5, method: "bootstrap-percentile" })
      expect(r.interval!.lo).toBeLessThan(r.interval!.hi) // three documents differ: a real width
      expect(r.nll!.map((w) => w.doc)).toEqual([...r.samples])
      expect(r.nll!.reduce((a, w) => a + w.count, 0)).toBe(r.tokens)
      expect(r.group).toBe("base models")
    }
  })

  test("resample: windows draws the sliding windows one by one", async () => {
    const dir = temp()
    const { metrics: m } = await run(dir, `{ lengths: [256], methods: [none], protocols: [sliding], stride: 128, samples: 2, tokens: 600, originalLength: 256, intervals: { resample: windows } }`)
    const r = m.perplexity[0]!
    expect(r.interval).toMatchObject({ unit: "windows", n: r.windows, replicates: 2000 })
    expect(r.windows).toBeGreaterThan(2)
  })

  test("model+pi / model+yarn: the model's factor set with PI / YaRN on top, beside its own", async () => {
    const dir = temp()
    const folder = join(dir, "ft")
    mkdirSync(folder)
    const lam = Array.from({ length: 16 }, (_, i) => 1 + i / 5)
    const cfg = JSON.parse(readFileSync(join(TINY_DIR, "config.json"), "utf8"))
    writeFileSync(join(folder, "config.json"), JSON.stringify({
      ...cfg, max_position_embeddings: 512, original_max_position_embeddings: 256,
      rope_scaling: { rope_type: "longrope-research", original_max_position_embeddings: 256, sets: [{ max_length: 256, factors: new Array(16).fill(1) }, { max_length: 512, factors: lam }] },
    }))
    const { metrics: m } = await run(dir, `{ lengths: [512, 1024], methods: [model, model+pi, model+yarn], samples: 2, tokens: 1100 }`, "ft")
    const config = readLlamaConfig(folder)
    const docs = [0, 1].map((i) => syntheticDocument({ tokenizer: byteTokenizer(), seed: 5, length: 1100 }, i).ids)
    const at = (method: string, L: number) => m.perplexity.find((r) => r.method === method && r.length === L)!
    for (const method of ["model+pi", "model+yarn"] as const) {
      for (const L of [512, 1024]) {
        const table = resolveRope({ ...config.rope, scaling: onTopScaling(config.rope, method, L).scaling })(L)
        expect(at(method, L).value).toBeCloseTo(perplexityInterval(docs.map((d, i) => ({ doc: i, ...docNll(d, L, table) })), "window-mean").value, 9)
      }
      // at the factor set's own length nothing is added; past it, a different table
      expect(at(method, 512).value).toBe(at("model", 512).value)
      expect(at(method, 1024).value).not.toBe(at("model", 1024).value)
    }
    expect(at("model+pi", 1024).value).not.toBe(at("model+yarn", 1024).value)
  })
})

describe("metrics.json", () => {
  test("a file from before intervals (no interval, no retrieval or tasks) still reads; task is part of a row's identity", () => {
    const old = JSON.parse(JSON.stringify({ perplexity: [{ method: "pi", model: "base", length: 512, value: 3, protocol: "truncate", samples: [], bos: "", aggregation: "", windows: 1, tokens: 1, scale: 1, rope: "", data: "" }], passkey: [], short: [], search: [] }))
    const m = parseMetrics(old)
    expect([m.retrieval, m.tasks]).toEqual([[], []])
    const row = (task: string, acc: number) => ({
      task, method: "model", model: "base", length: 512, acc: wilson(acc, 10), acc_norm: wilson(acc, 10), acc_bytes: wilson(acc, 10), items: 10, shots: 0, source: "", truncated: 0, scoring: "", rope: "",
    })
    const merged = mergeMetrics({ ...emptyMetrics(), tasks: [row("a", 1), row("b", 2)] }, { ...emptyMetrics(), tasks: [row("b", 3)] })
    expect(merged.tasks.map((t) => [t.task, t.acc.successes])).toEqual([["a", 1], ["b", 3]])
  })
})
