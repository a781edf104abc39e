// Passkey retrieval in `evaluate`: the answer is the first integer generated; accuracy counts exactly the
// trials a stub model answers right (the stub reads the key from the prompt, and lies at known trials or
// under a scaled table); and the real tiny model gives well-formed rows.
import { afterAll, describe, expect, test } from "bun:test"
import { Effect, Fiber } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import type { RopeTable } from "../../kernels/rope-table.ts"
import type { GpuRuntime } from "../../kernels/runtime.ts"
import { layerCollect, loadWorkflow, runWorkflow } from "../../cli/workflow.ts"
import { byteTokenizer } from "../../plugins/data/tokenizer.ts"
import { readLlamaConfig } from "../../plugins/models/llama/config.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { firstInteger, passkeyTrialPrompt } from "../../plugins/eval/passkey.ts"
import type { LoadedModel as ScoringModel } from "../../plugins/models/family.ts"
import { ModelLoader } from "../../stages/kit.ts"
import { emptyMetrics, mergeMetrics, parseMetrics, readMetrics } from "../../plugins/eval/metrics.ts"
import { gpu } from "../gpu-shared.ts"
import { scriptedSession } from "./scripted-session.ts"

const dirs: string[] = []
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), "ropeway-passkey-"))
  dirs.push(d)
  return d
}
afterAll(() => {
  for (const d of dirs) removeTree(d)
})

describe("firstInteger (the paper's re.search(r'\\d+'))", () => {
  test("the first run of digits, wherever it is; none gives undefined", () => {
    expect(firstInteger(" 12345. Remember")).toBe(12345)
    expect(firstInteger("is abc 042x 7")).toBe(42)
    expect(firstInteger("-17")).toBe(17)
    expect(firstInteger("1.5")).toBe(1)
    expect(firstInteger("no digits here")).toBeUndefined()
    expect(firstInteger("")).toBeUndefined()
  })
})

/** Keys the stub answers wrongly (with key + 1): a rule on the key, so the expected count is computable. */
const lies = (key: number) => key % 3 === 0
/** A plain-RoPE table (no scaling): the stub only answers right under it. */
const plain = (t: RopeTable) => t.attentionScale === 1 && (t.invFreq as Float64Array).every((f, i) => f === t.originalInvFreq[i])

/**
 * A generating stand-in: it reads "The pass key is K." from the prompt (byte tokens) and, one byte per
 * step, emits " K." (or " K+1." when it lies, or " no" under a scaled table), then EOS.
 */
const stub = (seen: { prompts: number; tables: RopeTable[]; onPrompt?: (n: number) => Promise<void> }, switchAt?: number) =>
  ModelLoader.of({
    load: async (dir): Promise<ScoringModel> => {
      const config = readLlamaConfig(dir)
      const V = config.vocabSize
      const session = (capacity: number) =>
        scriptedSession(V, capacity, async (prompt, t) => {
          seen.prompts++
          seen.tables.push(t)
          await seen.onPrompt?.(seen.prompts)
          const key = Number(/The pass key is (\d+)\./.exec(prompt)![1])
          return !plain(t) ? " no" : lies(key) ? ` ${key + 1}. ${key}` : ` ${key}. 7`
        })
      // optionally a length-dependent method (like longrope short → long): PI ×2 above `switchAt`
      const plainRope = resolveRope(config.rope)
      const scaled = resolveRope({ ...config.rope, scaling: { rope_type: "linear", factor: 2 } })
      return {
        config,
        rope: switchAt === undefined ? plainRope : (n) => (n <= switchAt ? plainRope(n) : scaled(n)),
        logprobs: async (tokens) => new Float64Array(tokens.length - 1).fill(-1),
        session,
        dispose: () => {},
      }
    },
  })

const workflow = (params: string) => `
name: passkey
seed: 7
model: tiny
steps:
  evaluate:
    stage: evaluate
    inputs: { model: model }
    params: ${params.replace(/^\{ /, "{ originalLength: 256, ")}
`

/** Runs the workflow with the stub loader, or on the shared device. */
const run = async (yaml: string, use: { loader: typeof ModelLoader.Service } | { rt: GpuRuntime }) => {
  const dir = temp()
  const file = join(dir, "wf.yaml")
  writeFileSync(file, yaml)
  const go = Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(Effect.provide(layerCollect([])))
  const r = await Effect.runPromise("loader" in use ? go.pipe(Effect.provideService(ModelLoader, use.loader)) : go.pipe(Effect.provideService(Gpu, use.rt)))
  const step = r.manifest.steps.find((s) => s.stage === "evaluate")!
  expect(step.status).toBe("done")
  return readMetrics(step.outputs["metrics"]!.path)
}

describe("passkey rows in metrics.json", () => {
  test("depths are separate measurements when merging; the fields saying how survive validation", () => {
    const row = (depth: number, accuracy: number) => ({ method: "pi", model: "base", length: 512, accuracy, trials: 10, depth, seed: 42, keys: [1], answers: [null], promptTokens: [511] })
    const merged = mergeMetrics({ ...emptyMetrics(), passkey: [row(0, 0.1), row(0.5, 0.2)] }, { ...emptyMetrics(), passkey: [row(0.5, 0.3)] })
    expect(merged.passkey.map((r) => [r.depth, r.accuracy])).toEqual([[0, 0.1], [0.5, 0.3]])
    expect(parseMetrics(merged).passkey[0]).toEqual(row(0, 0.1))
  })
})

describe("passkey (stub model)", () => {
  test("accuracy = correct / trials, per method, length and depth; the same prompts for every method", async () => {
    const seen = { prompts: 0, tables: [] as RopeTable[] }
    const m = await run(
      workflow(`{ lengths: [256], methods: [none, pi], samples: 1, passkey: { lengths: [256, 512], trials: 7, depths: [0, 0.5], seed: 11 } }`),
      { loader: stub(seen) },
    )
    expect(m.passkey.length).toBe(2 * 2 * 2)
    const tok = byteTokenizer()
    for (const r of m.passkey) {
      const prompts = Array.from({ length: 7 }, (_, t) => passkeyTrialPrompt(tok, 11, r.length, t, r.depth))
      expect(r.trials).toBe(7)
      expect(r.seed).toBe(11)
      expect(r.keys).toEqual(prompts.map((p) => p.key))
      expect(r.promptTokens).toEqual(prompts.map((p) => p.ids.length))
      for (const n of r.promptTokens!) expect(n).toBeLessThan(r.length)
      // pi at 2x scales the table: the stub answers "no" (no integer); at 1x pi is plain RoPE
      const scaled = r.method === "pi" && r.length === 512
      const want = scaled ? 0 : prompts.filter((p) => !lies(p.key)).length
      expect(r.correct).toBe(want)
      expect(r.accuracy).toBe(want / 7)
      expect(r.answers).toEqual(prompts.map((p) => (scaled ? null : lies(p.key) ? p.key + 1 : p.key)))
      expect(r.policy).toBe("fixed")
      expect(r.maxNew).toBe(10)
    }
    expect(new Set(m.passkey.map((r) => r.depth))).toEqual(new Set([0, 0.5]))
    // the case is not degenerate: some trials lie, some do not
    const c = m.passkey.find((r) => r.method === "none" && r.length === 512 && r.depth === 0)!
    expect(c.accuracy).toBeGreaterThan(0)
    expect(c.accuracy).toBeLessThan(1)
    // none and pi share tables at 1x: one generation serves both; at 2x each has its own
    expect(seen.prompts).toBe(2 * 7 /* 256 */ + 2 * 2 * 7 /* 512 */)
  })

  test("model method: its own RoPE with re-prefill; no depths: one row per length", async () => {
    const m = await run(
      workflow(`{ lengths: [256], methods: [model], samples: 1, passkey: { lengths: [300], trials: 4, maxNew: 12 } }`),
      { loader: stub({ prompts: 0, tables: [] }) },
    )
    expect(m.passkey.length).toBe(1)
    const r = m.passkey[0]!
    expect(r.depth).toBeUndefined()
    expect(r.policy).toBe("reprefill")
    expect(r.seed).toBe(7) // the step's seed
    const keys = Array.from({ length: 4 }, (_, t) => passkeyTrialPrompt(byteTokenizer(), 7, 300, t, undefined).key)
    expect(r.keys).toEqual(keys)
    expect(r.correct).toBe(keys.filter((k) => !lies(k)).length)
  })
})

describe("passkey (stub model): a method whose table changes with length", () => {
  test("model re-prefills at the switch (the stub then stops answering); baselines keep one table", async () => {
    const seen = { prompts: 0, tables: [] as RopeTable[] }
    const m = await run(workflow(`{ lengths: [256], methods: [model, none], samples: 1, passkey: { lengths: [256], trials: 3 } }`), { loader: stub(seen, 256) })
    const model = m.passkey.find((r) => r.method === "model")!
    const none = m.passkey.find((r) => r.method === "none")!
    expect(model.policy).toBe("reprefill")
    expect(none.policy).toBe("fixed")
    // prompts of 255 tokens: positions 255 and 256 under plain RoPE, then the switch at 257 re-prefills
    // under PI, where the stub answers " no": the generated text is " D no" (one digit of the key)
    expect(model.promptTokens).toEqual([255, 255, 255])
    expect(model.correct).toBe(0)
    expect(model.answers).toEqual(model.keys!.map((k) => Number(String(lies(k) ? k + 1 : k)[0])))
    expect(none.correct).toBe(model.keys!.filter((k) => !lies(k)).length)
    // per trial: the model's prefill (plain), its re-prefill (PI); the baseline's one prefill (plain)
    expect(seen.tables.map((t) => plain(t))).toEqual([true, false, true, false, true, false, true, true, true])
  })
})

describe("passkey (stub model): interrupted", () => {
  test("between generations: a re-run resumes from the saved ones and ends with the same rows", async () => {
    const dir = temp()
    const file = join(dir, "wf.yaml")
    writeFileSync(file, workflow(`{ lengths: [256], methods: [none, pi], samples: 1, passkey: { lengths: [256, 512], trials: 3 } }`))
    const go = (seen: Parameters<typeof stub>[0], store: string) =>
      Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store, printRunDir: false })).pipe(
        Effect.provide(layerCollect([])),
        Effect.provideService(ModelLoader, stub(seen)),
      )
    const refSeen = { prompts: 0, tables: [] }
    const ref = await Effect.runPromise(go(refSeen, join(dir, "ref")))
    expect(refSeen.prompts).toBe(3 + 2 * 3) // 256: one table for both; 512: one each

    let interrupt!: () => void
    const reached = new Promise<void>((r) => (interrupt = r))
    const seen = {
      prompts: 0,
      tables: [],
      onPrompt: async (n: number) => {
        if (n === 4) {
          interrupt()
          await new Promise((r) => setTimeout(r, 150))
        }
      },
    }
    const fiber = Effect.runFork(go(seen, join(dir, "runs")))
    await reached
    await Effect.runPromise(Fiber.interrupt(fiber))
    expect(seen.prompts).toBe(4) // the generation in flight finished and was saved; nothing after it ran
    const again = { prompts: 0, tables: [] }
    const second = await Effect.runPromise(go(again, join(dir, "runs")))
    expect(again.prompts).toBe(9 - 4)
    const rows = (r: typeof ref) => readMetrics(r.manifest.steps[1]!.outputs["metrics"]!.path).passkey
    expect(rows(second)).toEqual(rows(ref))
  })
})

describe("passkey (tiny model)", () => {
  test("finite, well-formed rows for every method and length", async () => {
    const rt = await gpu()
    const m = await run(
      workflow(`{ lengths: [256], methods: [model, none, pi, yarn], samples: 1, passkey: { lengths: [256, 512], trials: 2, maxNew: 6 } }`),
      { rt },
    )
    expect(m.passkey.length).toBe(4 * 2)
    for (const r of m.passkey) {
      expect(r.accuracy).toBeGreaterThanOrEqual(0)
      expect(r.accuracy).toBeLessThanOrEqual(1)
      expect(r.accuracy).toBe(r.correct! / r.trials)
      expect(r.trials).toBe(2)
      expect(r.answers!.length).toBe(2)
      for (const a of r.answers!) expect(a === null || Number.isInteger(a)).toBe(true)
      for (const n of r.promptTokens!) expect(n).toBeLessThan(r.length)
      expect(r.rope!.length).toBeGreaterThan(0)
    }
  })
})
