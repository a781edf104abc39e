// The evaluate stage through runWorkflow with a stub model (exact, fast): every number against an
// independent re-implementation of the reference loops (YaRN/LongRoPE perplexity.py, llama.cpp perplexity).
import { describe, expect, test } from "bun:test"
import { Effect, Fiber } from "effect"
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "bun:test"
import type { RopeTable } from "../../kernels/rope-table.ts"
import { layerCollect, loadWorkflow, type ProgressEvent, runWorkflow } from "../../cli/workflow.ts"
import { BYTE_BOS, byteTokenizer } from "../../plugins/data/tokenizer.ts"
import { syntheticDocument } from "../../plugins/data/synthetic.ts"
import { readLlamaConfig } from "../../plugins/models/llama/config.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { methodScaling } from "../../plugins/eval/protocols.ts"
import type { LoadedModel as ScoringModel } from "../../plugins/models/family.ts"
import { ModelLoader } from "../../stages/kit.ts"
import { readMetrics } from "../../plugins/eval/metrics.ts"

const dirs: string[] = []
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), "ropeway-eval-"))
  dirs.push(d)
  return d
}
afterAll(() => {
  for (const d of dirs) removeTree(d)
})

/** A causal stand-in for the model: ln p(next) depends on the target, its position and the table. */
const stubLp = (target: number, pos: number, t: RopeTable): number => {
  const f = t.invFreq as Float64Array
  return -(1 + ((target * 31 + pos) % 11) / 10) * (1 + 0.3 * Math.sin(pos * f[1]!) * t.attentionScale)
}

const stub = (calls: { n: number; onCall?: (n: number) => Promise<void> }) =>
  ModelLoader.of({
    load: async (dir): Promise<ScoringModel> => {
      const config = readLlamaConfig(dir)
      return {
        config,
        rope: resolveRope(config.rope),
        logprobs: async (tokens, { rope }) => {
          calls.n++
          await calls.onCall?.(calls.n)
          return Float64Array.from({ length: tokens.length - 1 }, (_, i) => stubLp(tokens[i + 1]!, i, rope))
        },
        dispose: () => {},
      }
    },
  })

/** NLL of `seq[1..]` (positions where `scored(p)` for target position p) under the stub. */
const nll = (seq: readonly number[], t: RopeTable, scored: (p: number) => boolean) => {
  let sum = 0
  let count = 0
  for (let p = 1; p < seq.length; p++) if (scored(p)) (sum -= stubLp(seq[p]!, p - 1, t), count++)
  return { sum, count }
}

/** perplexity.py (YaRN / LongRoPE) with add_start_token, as written there. */
const refSliding = (docs: number[][], L: number, stride: number, t: RopeTable): number => {
  const nlls: number[] = []
  const maxTok = L - 1
  for (const enc of docs) {
    let prev = 0
    for (let begin = 0; begin < enc.length; begin += stride) {
      const end = Math.min(begin + maxTok, enc.length)
      const trg = end - prev
      const input = [BOS_ID, ...enc.slice(begin, end)]
      const r = nll(input, t, (p) => p >= input.length - trg)
      nlls.push(r.sum / r.count)
      prev = end
      if (end === enc.length) break
    }
  }
  return Math.exp(nlls.reduce((a, b) => a + b, 0) / nlls.length)
}

/** llama.cpp perplexity: n/L chunks, BOS overwrites the first token, positions ≥ L/2 predict. */
const refChunked = (docs: number[][], L: number, t: RopeTable): number => {
  let sum = 0
  let count = 0
  for (const tokens of docs) {
    for (let c = 0; (c + 1) * L <= tokens.length; c++) {
      const batch = tokens.slice(c * L, (c + 1) * L)
      batch[0] = BOS_ID
      const first = Math.floor(L / 2)
      const r = nll(batch, t, (p) => p - 1 >= first)
      sum += r.sum
      count += r.count
    }
  }
  return Math.exp(sum / count)
}
const BOS_ID = BYTE_BOS

const WORKFLOW = `
name: eval-stub
seed: 5
model: tiny
steps:
  evaluate:
    stage: evaluate
    inputs: { model: model }
    params:
      lengths: [512, 256]
      methods: [model, none, pi, ntk, yarn]
      protocols: [truncate, sliding, chunked]
      stride: 100
      samples: 2
      tokens: 700
      originalLength: 256
`

describe("evaluate (stub model)", () => {
  test("every value matches the reference loops; a re-run reuses the step", async () => {
    const dir = temp()
    const file = join(dir, "wf.yaml")
    writeFileSync(file, WORKFLOW)
    const calls = { n: 0 }
    const events: ProgressEvent[] = []
    const go = () =>
      Effect.runPromise(
        Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
          Effect.provide(layerCollect(events)),
          Effect.provideService(ModelLoader, stub(calls)),
        ),
      )
    const first = await go()
    const step = first.manifest.steps.find((s) => s.name === "evaluate")!
    expect(step.status).toBe("done")
    const metricsPath = step.outputs["metrics"]!.path
    const m = readMetrics(metricsPath)
    expect(m.passkey).toEqual([])
    expect(m.perplexity.length).toBe(5 * 2 * 3)

    const tok = byteTokenizer()
    const docs = [0, 1].map((i) => syntheticDocument({ tokenizer: tok, seed: 5, length: 700 }, i).ids)
    const config = readLlamaConfig(first.manifest.steps[0]!.outputs["model"]!.path)
    for (const e of m.perplexity) {
      const s = Math.max(1, e.length / 256)
      const sc = methodScaling(e.method as "none", s, 256)
      const table = resolveRope({ ...config.rope, originalMaxPositions: 256, scaling: sc === "model" ? config.rope.scaling : sc })(e.length)
      const want =
        e.protocol === "truncate" ? refSliding(docs.map((d) => d.slice(0, e.length - 1)), e.length, e.length - 1, table)
        : e.protocol === "sliding" ? refSliding(docs, e.length, 100, table)
        : refChunked(docs, e.length, table)
      expect(e.value).toBeCloseTo(want, 9)
      expect(e.model).toBe("base")
      expect(e.samples).toEqual(["synthetic(seed=5,tokens=700)#0", "synthetic(seed=5,tokens=700)#1"])
      expect(e.scale).toBe(e.length / 256)
    }
    // fewer passes than windows: truncate rides on sliding, plain-RoPE tables are shared
    const windows = m.perplexity.reduce((a, e) => a + e.windows, 0)
    expect(calls.n).toBeGreaterThan(0)
    expect(calls.n).toBeLessThan(windows / 2)
    // distinct methods differ at 2× (the comparison is not degenerate)
    const at512 = new Set(m.perplexity.filter((e) => e.length === 512 && e.protocol === "truncate").map((e) => e.value.toFixed(9)))
    expect(at512.size).toBe(4) // model = none (the tiny model has no rope_scaling)

    const before = calls.n
    const bytes = readFileSync(metricsPath, "utf8")
    events.length = 0
    const second = await go()
    expect(calls.n).toBe(before)
    expect(second.manifest.steps.map((s) => s.status)).toEqual(["cached", "cached"])
    expect(events.some((e) => e._tag === "StepStart")).toBe(false)
    expect(readFileSync(second.manifest.steps[1]!.outputs["metrics"]!.path, "utf8")).toBe(bytes)
  })

  // LongRoPE's Books3 protocol (§5.1): windows at 0, stride, 2·stride…, each scored whole, text between them skipped.
  test("a stride longer than the window: windows every stride tokens, as perplexity.py", async () => {
    const dir = temp()
    const file = join(dir, "wf.yaml")
    writeFileSync(file, WORKFLOW.replace("stride: 100", "stride: 600").replace("[truncate, sliding, chunked]", "[sliding]").replace("[model, none, pi, ntk, yarn]", "[none, yarn]"))
    const run = await Effect.runPromise(
      Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
        Effect.provide(layerCollect([])),
        Effect.provideService(ModelLoader, stub({ n: 0 })),
      ),
    )
    const m = readMetrics(run.manifest.steps.find((s) => s.name === "evaluate")!.outputs["metrics"]!.path)
    const tok = byteTokenizer()
    const docs = [0, 1].map((i) => syntheticDocument({ tokenizer: tok, seed: 5, length: 700 }, i).ids)
    const config = readLlamaConfig(run.manifest.steps[0]!.outputs["model"]!.path)
    expect(m.perplexity.length).toBe(4)
    for (const e of m.perplexity) {
      const sc = methodScaling(e.method as "none", Math.max(1, e.length / 256), 256)
      const table = resolveRope({ ...config.rope, originalMaxPositions: 256, scaling: sc === "model" ? config.rope.scaling : sc })(e.length)
      expect(e.value).toBeCloseTo(refSliding(docs, e.length, 600, table), 9)
      expect(e.stride).toBe(600)
      expect(e.windows).toBe(4) // windows at 0 and 600 in each of the 2 documents
      expect(e.tokens).toBe(2 * ((e.length - 1) + 100)) // the second window holds the last 100 tokens
    }
  })

  test("minTokens: documents shorter than a length's window are skipped there and counted; corpus path relative to the workflow file", async () => {
    const dir = temp()
    mkdirSync(join(dir, "corpus"))
    const text = (n: number, seed: number) => Array.from({ length: n }, (_, i) => String.fromCharCode(97 + ((i * 7 + seed) % 26))).join("")
    writeFileSync(join(dir, "corpus", "a.txt"), text(800, 1))
    writeFileSync(join(dir, "corpus", "b.txt"), text(300, 2))
    writeFileSync(join(dir, "corpus", "c.txt"), text(100, 3)) // below minTokens: never sampled
    const file = join(dir, "wf.yaml")
    writeFileSync(file, WORKFLOW.replace("stride: 100", "minTokens: 290\n      data: { source: corpus, path: corpus }").replace("[truncate, sliding, chunked]", "[truncate]").replace("[model, none, pi, ntk, yarn]", "[none]"))
    const run = await Effect.runPromise(
      Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
        Effect.provide(layerCollect([])),
        Effect.provideService(ModelLoader, stub({ n: 0 })),
      ),
    )
    const m = readMetrics(run.manifest.steps.find((s) => s.name === "evaluate")!.outputs["metrics"]!.path)
    const byLen = new Map(m.perplexity.map((e) => [e.length, e]))
    expect(byLen.get(256)!.skipped).toBe(0)
    expect(byLen.get(256)!.samples.length).toBe(2)
    expect(byLen.get(512)!.skipped).toBe(1)
    expect(byLen.get(512)!.samples).toEqual([join(dir, "corpus", "a.txt")])
    expect(byLen.get(512)!.data).toContain(`corpus ${join(dir, "corpus")}`)
    const config = readLlamaConfig(run.manifest.steps[0]!.outputs["model"]!.path)
    const a = byteTokenizer().encode(text(800, 1)).slice(0, 700)
    const table = resolveRope({ ...config.rope, originalMaxPositions: 256, scaling: undefined })(512)
    expect(byLen.get(512)!.value).toBeCloseTo(refSliding([a.slice(0, 511)], 512, 511, table), 9)
  })

  test("interrupted between passes, a re-run resumes from the checkpoint and ends with the same numbers", async () => {
    const dir = temp()
    const file = join(dir, "wf.yaml")
    writeFileSync(file, WORKFLOW)
    const runOnce = (calls: { n: number; onCall?: (n: number) => Promise<void> }) =>
      Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
        Effect.provide(layerCollect([])),
        Effect.provideService(ModelLoader, stub(calls)),
      )
    // reference: an uninterrupted run in another store
    const refDir = temp()
    const refCalls = { n: 0 }
    const ref = await Effect.runPromise(
      Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(refDir, "runs"), printRunDir: false })).pipe(
        Effect.provide(layerCollect([])),
        Effect.provideService(ModelLoader, stub(refCalls)),
      ),
    )
    const total = refCalls.n

    let interrupt!: () => void
    const reached = new Promise<void>((r) => (interrupt = r))
    // the 5th pass signals, then takes a while: the interrupt arrives while it is in flight
    const calls = {
      n: 0,
      onCall: async (n: number) => {
        if (n === 5) {
          interrupt()
          await new Promise((r) => setTimeout(r, 150))
        }
      },
    }
    const fiber = Effect.runFork(runOnce(calls))
    await reached
    await Effect.runPromise(Fiber.interrupt(fiber))
    // the pass in flight finished (and was saved); nothing after it ran
    expect(calls.n).toBe(5)
    const again = { n: 0 }
    const second = await Effect.runPromise(runOnce(again))
    expect(again.n).toBe(total - 5)
    const metrics = (r: typeof ref) => readFileSync(r.manifest.steps[1]!.outputs["metrics"]!.path, "utf8")
    expect(metrics(second)).toBe(metrics(ref))
  })

  test("corpus data: seeded choice among documents long enough, ids are their files", async () => {
    const dir = temp()
    const corpus = join(dir, "corpus")
    mkdirSync(corpus)
    writeFileSync(join(corpus, "a.txt"), "short")
    writeFileSync(join(corpus, "b.txt"), "The grass is green. ".repeat(30))
    writeFileSync(join(corpus, "c.txt"), "The sky is blue. ".repeat(30))
    writeFileSync(join(corpus, "d.txt"), "Here we go. ".repeat(10))
    const file = join(dir, "wf.yaml")
    writeFileSync(file, `name: corpus\nseed: 1\nmodel: tiny\nsteps:\n  e:\n    stage: evaluate\n    inputs: { model: model }\n    params: { lengths: [257], methods: [none], samples: 2, data: { source: corpus, path: "${corpus}" } }\n`)
    const r = await Effect.runPromise(
      Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
        Effect.provide(layerCollect([])),
        Effect.provideService(ModelLoader, stub({ n: 0 })),
      ),
    )
    const e = readMetrics(r.manifest.steps[1]!.outputs["metrics"]!.path).perplexity[0]!
    expect([...e.samples].sort()).toEqual([join(corpus, "b.txt"), join(corpus, "c.txt")])
    expect(e.tokens).toBe(2 * 256)
    expect(e.data).toContain("≥ 257 tokens")
    // three documents asked for, two long enough: a clear error
    writeFileSync(file, readFileSync(file, "utf8").replace("samples: 2", "samples: 3"))
    const bad = await Effect.runPromise(
      Effect.result(
        Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
          Effect.provide(layerCollect([])),
          Effect.provideService(ModelLoader, stub({ n: 0 })),
        ),
      ),
    )
    expect(bad._tag === "Failure" && String((bad.failure as { message: string }).message)).toContain("only 2 of 4 documents")
  })
})
