// Retrieval tasks and multiple-choice tasks in `evaluate`, through runWorkflow with stub models: the rows
// count exactly what a stub that reads the needles answers (and drops a value at known trials), under
// every method and depth with the same prompts; multiple-choice rows equal the library's scoring of the
// same items with the same model, a task file and its shards give the same row, and a malformed task file
// fails the step with one line naming the file, the line and the field.
import { afterAll, describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { RopeTable } from "../../kernels/rope-table.ts"
import { layerCollect, loadWorkflow, runWorkflow } from "../../cli/workflow.ts"
import { byteTokenizer } from "../../plugins/data/tokenizer.ts"
import { readMetrics } from "../../plugins/eval/metrics.ts"
import { readTaskFile, scoreChoiceItems, summarizeChoices } from "../../plugins/eval/multiple-choice.ts"
import { retrievalTrial, scoreRetrieval } from "../../plugins/eval/retrieval.ts"
import { passkeyChoiceItems } from "../../plugins/eval/synthetic-choice.ts"
import { readLlamaConfig } from "../../plugins/models/llama/config.ts"
import type { LoadedModel } from "../../plugins/models/family.ts"
import { TINY_DIR } from "../../plugins/models/tiny/tiny.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { ModelLoader } from "../../stages/kit.ts"
import { scriptedSession } from "./scripted-session.ts"

const dirs: string[] = []
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), "ropeway-eval-tasks-"))
  dirs.push(d)
  return d
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

const plainTable = resolveRope(readLlamaConfig(TINY_DIR).rope)(256)
const plain = (t: RopeTable) => t.attentionScale === 1 && (t.invFreq as Float64Array).every((f, i) => f === t.originalInvFreq[i])

/**
 * What the stub says after a retrieval prompt: the values of the keys asked about, read from the needles
 * ("One of the special magic numbers for K is: V."), joined by ", ", except the last one when the first
 * value is odd (a partial answer); " no" under a scaled table.
 */
const stubAnswer = (text: string, t: RopeTable): string => {
  if (!plain(t)) return " no"
  const tail = text.slice(text.lastIndexOf("\n") + 1)
  const asked = /for (.+) mentioned/.exec(tail)![1]!.split(/, and | and |, /)
  const values = [...text.matchAll(/special magic numbers? for ([^\n]+?) is: (\d+)\./g)].filter((m) => asked.includes(m[1]!)).map((m) => m[2]!)
  const said = Number(values[0]) % 2 === 1 && values.length > 1 ? values.slice(0, -1) : values
  return ` ${said.join(", ")}.`
}

/** Generates stubAnswer (scriptedSession); log-probs depend on the token, position and table. */
const stub = (seen: { prompts: number }) =>
  ModelLoader.of({
    load: async (dir): Promise<LoadedModel> => {
      const config = readLlamaConfig(dir)
      const V = config.vocabSize
      const session = (capacity: number) =>
        scriptedSession(V, capacity, (prompt, t) => {
          seen.prompts++
          return stubAnswer(prompt, t)
        })
      return {
        config,
        rope: resolveRope(config.rope),
        logprobs: async (tokens, { rope }) => Float64Array.from({ length: tokens.length - 1 }, (_, i) => -1 - ((tokens[i + 1]! * 7 + i) % 5) / 4 - 0.1 * (rope.invFreq as Float64Array)[1]!),
        session,
        dispose: () => {},
      }
    },
  })

const run = async (dir: string, params: string, seen = { prompts: 0 }) => {
  const file = join(dir, "wf.yaml")
  writeFileSync(file, `name: tasks\nseed: 9\nmodel: tiny\nsteps:\n  evaluate:\n    stage: evaluate\n    inputs: { model: model }\n    params: ${params}\n`)
  const go = Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
    Effect.provide(layerCollect([])),
    Effect.provideService(ModelLoader, stub(seen)),
  )
  return Effect.runPromise(Effect.result(go))
}

const metricsOf = (r: Awaited<ReturnType<typeof run>>) => {
  if (r._tag !== "Success") throw new Error(`the run failed: ${String((r.failure as { message?: string }).message ?? r.failure)}`)
  return readMetrics(r.success.manifest.steps.find((s) => s.stage === "evaluate")!.outputs["metrics"]!.path)
}

describe("retrieval tasks (stub model)", () => {
  test("every task × length × depth × method: all-found accuracy and RULER's share found, as the stub answers; the same prompts for every method", async () => {
    const seen = { prompts: 0 }
    const m = metricsOf(await run(temp(), `{ lengths: [512], methods: [none, pi], samples: 1, originalLength: 512, retrieval: { tasks: [single, multikey, multivalue, multiquery], lengths: [512, 1024], depths: [0, 1], trials: 5, keys: 3, values: 3, seed: 4 } }`, seen))
    expect(m.retrieval.length).toBe(4 * 2 * 2 * 2)
    const tok = byteTokenizer()
    for (const r of m.retrieval) {
      const prompts = Array.from({ length: 5 }, (_, trial) => retrievalTrial({ tokenizer: tok, task: r.task as "single", length: r.length, depth: r.depth!, keys: 3, values: 3, seed: 4, trial }))
      expect(r.expected).toEqual(prompts.map((p) => [...p.expected]))
      expect(r.promptTokens).toEqual(prompts.map((p) => p.ids.length))
      const scaled = r.method === "pi" && r.length === 1024
      const scores = prompts.map((p, t) => scoreRetrieval(p.expected, r.generated[t]!))
      expect(r.generated).toEqual(prompts.map((p) => (scaled ? " no" : stubAnswer(p.text, plainTable))))
      const correct = scores.filter((s) => s.correct).length
      expect(r.accuracy).toMatchObject({ successes: correct, n: 5, method: "wilson", unit: "trials" })
      expect(r.partial.value).toBeCloseTo(scores.reduce((a, s) => a + s.score, 0) / 5, 12)
      expect(r.partial).toMatchObject({ n: 5, unit: "trials", method: "bootstrap-percentile", replicates: 2000, seed: 9 })
      expect(r.policy).toBe("fixed")
      expect(r.haystack).toContain("passkey filler")
    }
    // not degenerate: multi-value answers are partial at some trials, complete at others
    const mv = m.retrieval.filter((r) => r.task === "multivalue" && r.method === "none")
    expect(mv.some((r) => r.partial.value > r.accuracy.value)).toBe(true)
    expect(mv.some((r) => r.accuracy.value > 0)).toBe(true)
    // at 512 (scale 1) none and pi share tables: one generation per prompt serves both
    expect(seen.prompts).toBe(4 * 2 * 5 /* 512 */ + 4 * 2 * 2 * 5 /* 1024 */)
  })

  test("a haystack text file (relative to the workflow file) hides the needles; random depths without `depths`", async () => {
    const dir = temp()
    writeFileSync(join(dir, "hay.txt"), "The river ran past the mill. Nobody saw the heron that morning. Bread was cheap in spring.\n")
    const m = metricsOf(await run(dir, `{ lengths: [512], methods: [none], samples: 1, originalLength: 256, retrieval: { tasks: [single], lengths: [300], trials: 2, haystack: { file: hay.txt } } }`))
    expect(m.retrieval.length).toBe(1)
    expect(m.retrieval[0]!.depth).toBeUndefined()
    expect(m.retrieval[0]!.haystack).toBe(`text file ${join(dir, "hay.txt")}`)
    expect(m.retrieval[0]!.accuracy.value).toBe(1)
  })
})

const taskFile = (lines: readonly string[]) => lines.join("\n") + "\n"
const ITEMS = [
  '{"context": "The sky is", "choices": ["blue", "green", "loud"], "gold": 0}',
  '{"context": "Two plus two is", "choices": ["four", "five"], "gold": 0}',
  '{"context": "Fire is", "choices": ["cold", "hot"], "gold": 1}',
  '{"context": "Snow is", "choices": ["white", "black", "red", "warm"], "gold": 0}',
]

describe("multiple-choice tasks (stub model)", () => {
  test("passkey-choice and a task file (whole, and as two shards): rows equal the library's scoring of the same items", async () => {
    const dir = temp()
    writeFileSync(join(dir, "all.jsonl"), taskFile(ITEMS))
    writeFileSync(join(dir, "a.jsonl"), taskFile(ITEMS.slice(0, 2)))
    writeFileSync(join(dir, "b.jsonl"), taskFile(ITEMS.slice(2)))
    writeFileSync(join(dir, "shots.jsonl"), taskFile(['{"context": "Grass is", "choices": ["green", "blue"], "gold": 0}', '{"context": "Ice is", "choices": ["cold", "hot"], "gold": 0}']))
    const m = metricsOf(await run(dir, `{ lengths: [512], methods: [none], samples: 1, originalLength: 256, tasks: [{ name: passkey-choice, items: 6, length: 250 }, { name: whole, files: [all.jsonl], fewshot: { files: [shots.jsonl], shots: 1 } }, { name: shards, files: [a.jsonl, b.jsonl], fewshot: { files: [shots.jsonl], shots: 1 } }] }`))
    expect(m.tasks.map((t) => t.task)).toEqual(["passkey-choice", "whole", "shards"])
    const tok = byteTokenizer()
    const model = await stub({ prompts: 0 }).load(TINY_DIR)
    const opts = { rope: (n: number) => model.rope(n), maxLength: 256 }
    const pk = summarizeChoices(await scoreChoiceItems(model, tok, passkeyChoiceItems({ tokenizer: tok, seed: 9, count: 6, length: 250 }), opts))
    expect(m.tasks[0]).toMatchObject({ method: "model", model: "base", length: 256, items: 6, shots: 0, acc: pk.acc, acc_norm: pk.acc_norm, acc_bytes: pk.acc_bytes })
    const whole = summarizeChoices(await scoreChoiceItems(model, tok, readTaskFile(join(dir, "all.jsonl")), { ...opts, shots: 1, pool: readTaskFile(join(dir, "shots.jsonl")) }))
    expect(m.tasks[1]!.acc).toEqual(whole.acc)
    expect(m.tasks[1]!.acc_norm).toEqual(whole.acc_norm)
    expect(m.tasks[1]!.shots).toBe(1)
    // shards: the same prompts, log-likelihoods and results
    expect(m.tasks[2]!.acc).toEqual(m.tasks[1]!.acc)
    expect(m.tasks[2]!.acc_norm).toEqual(m.tasks[1]!.acc_norm)
    expect(m.tasks[2]!.source).toContain("a.jsonl")
    // not degenerate: the stub gets some items right and some wrong across the tasks
    const accs = m.tasks.map((t) => t.acc.value)
    expect(accs.some((a) => a > 0) && accs.some((a) => a < 1)).toBe(true)
  })

  test("a malformed task file fails the step before the model loads, naming the file, the line and the field", async () => {
    const dir = temp()
    for (const [line, want] of [
      ['{"context": "x", "choices": ["a", "b"]}', "gold"],
      ['{"context": "x", "choices": ["a", "b"], "gold": 2}', "gold"],
      ['{"context": "x", "choices": [], "gold": 0}', "choices"],
    ] as const) {
      writeFileSync(join(dir, "bad.jsonl"), taskFile([ITEMS[0]!, "", line]))
      const seen = { prompts: 0 }
      const r = await run(dir, `{ lengths: [512], methods: [none], samples: 1, originalLength: 256, tasks: [{ name: bad, files: [bad.jsonl] }] }`, seen)
      expect(r._tag).toBe("Failure")
      // the runner adds the step and the run folder; the stage's own error is one line
      const first = String((r as { failure: { message: string } }).failure.message).split("\n")[0]!
      expect(first).toStartWith(`step "evaluate" (stage evaluate) failed: ${join(dir, "bad.jsonl")}:3: ${want}`)
      expect(seen.prompts).toBe(0)
    }
  })

  test("a task file that is not there is a plan problem with its position", async () => {
    const dir = temp()
    const r = await run(dir, `{ lengths: [512], methods: [none], samples: 1, tasks: [{ name: gone, files: [missing.jsonl] }] }`)
    expect(r._tag).toBe("Failure")
    expect(String((r as { failure: { message: string } }).failure.message)).toContain(`task file not found: ${join(dir, "missing.jsonl")}`)
  })
})
