// The multiple-choice scorer: task-file validation (one line naming file, line and field), lm-eval's pair
// encoding and few-shot prompts, acc / acc_norm / acc_bytes arithmetic, and on the Dawn device: agreement
// with log-likelihoods summed by hand from the float64 reference model, identical results for a task file
// split into shards, and the tiny model above chance on the built-in task.
import { afterAll, describe, expect, test } from "bun:test"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { BYTE_BOS, byteTokenizer } from "../../plugins/data/tokenizer.ts"
import {
  type ChoiceItem,
  choiceContext,
  choiceResult,
  encodeChoice,
  fewshotExamples,
  readTaskFile,
  readTaskFiles,
  scoreChoiceItems,
  summarizeChoices,
} from "../../plugins/eval/multiple-choice.ts"
import { passkeyChoiceItems } from "../../plugins/eval/synthetic-choice.ts"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { TINY_DIR } from "../../plugins/models/tiny/tiny.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir, writeRandomModel } from "../models/random-model.ts"
import { referenceLogprobs } from "../../plugins/models/llama/model.ref.ts"

const FIXTURE = join(import.meta.dirname, "../fixtures/eval/choices.jsonl")
const tok = byteTokenizer()
const bytes = (s: string): number[] => Array.from(new TextEncoder().encode(s))
const dirs: string[] = []
const tmp = (): string => {
  dirs.push(tempDir("ropeway-mc-"))
  return dirs[dirs.length - 1]!
}
afterAll(() => dirs.forEach(removeDir))

describe("task files", () => {
  test("reads items with their file:line ids, skipping blank lines", () => {
    const items = readTaskFile(FIXTURE)
    expect(items.map((i) => i.id)).toEqual([`${FIXTURE}:1`, `${FIXTURE}:2`, `${FIXTURE}:4`, `${FIXTURE}:5`])
    expect(items[2]).toMatchObject({ choices: ["café", "tea", "coffee"], gold: 1 })
  })
  test("a malformed line gives one line naming the file, the line and the field", () => {
    const dir = tmp()
    const good = '{"context": "a", "choices": ["x", "y"], "gold": 1}'
    const cases: Array<[string, RegExp]> = [
      ['{"context": "a", "choices": ["x", "y"]}', /:2: gold: must be a number \(was missing\)$/],
      ['{"context": "a", "choices": ["x", "y"], "gold": 2}', /:2: gold: must be less than 2, the number of choices \(was 2\)$/],
      ['{"context": "a", "choices": ["x", "y"], "gold": -1}', /:2: gold: must be non-negative/],
      ['{"context": "a", "choices": ["x", "y"], "gold": 0.5}', /:2: gold: must be an integer/],
      ['{"context": "a", "choices": [], "gold": 0}', /:2: choices: must be non-empty$/],
      ['{"context": "a", "choices": ["x", ""], "gold": 0}', /:2: choices\[1\]: must be non-empty$/],
      ['{"choices": ["x"], "gold": 0}', /:2: context: must be a string \(was missing\)$/],
      ['{"context": "a", "choices": ["x", "y"], "gold": 1', /:2: invalid JSON/],
      ['["a", ["x"], 0]', /:2: expected a JSON object/],
    ]
    for (const [line, message] of cases) {
      const file = join(dir, "task.jsonl")
      writeFileSync(file, `${good}\r\n${line}\n${good}\n`)
      let err: Error | undefined
      try {
        readTaskFile(file)
      } catch (e) {
        err = e as Error
      }
      expect(err?.message).toMatch(message)
      expect(err?.message.startsWith(`${file}:2: `)).toBe(true)
      expect(err?.message).not.toContain("\n")
    }
    writeFileSync(join(dir, "empty.jsonl"), "\n\n")
    expect(() => readTaskFile(join(dir, "empty.jsonl"))).toThrow("no items")
    expect(() => readTaskFile(join(dir, "missing.jsonl"))).toThrow("cannot read")
  })
})

describe("prompts", () => {
  test("lm-eval's pair encoding: trailing whitespace moves to the continuation; BOS first", () => {
    const r = encodeChoice(tok, "The sky is ", " blue")
    expect(r.tokens).toEqual([BYTE_BOS, ...bytes("The sky is"), ...bytes("  blue")])
    expect(r.start).toBe(1 + "The sky is".length)
    expect(r.truncated).toBe(0)
  })
  test("too long: the oldest context tokens go, BOS and the continuation stay", () => {
    const r = encodeChoice(tok, "abcdefgh", " xy", 8)
    expect(r.tokens).toEqual([BYTE_BOS, ...bytes("efgh xy")])
    expect(r.truncated).toBe(4)
    expect(() => encodeChoice(tok, "abc", " a long answer", 8)).toThrow("does not fit")
  })
  test("an empty context is scored after EOS when there is no BOS (lm-eval's end-of-text prefix)", () => {
    const noBos = { ...tok, bos: undefined }
    expect(encodeChoice(noBos, "", "hi").tokens).toEqual([tok.eos!, ...bytes("hi")])
    expect(encodeChoice(tok, "", "hi").tokens).toEqual([BYTE_BOS, ...bytes("hi")])
  })
  test("few-shot examples: drawn by the item's content, never the item itself, answers after the delimiter", () => {
    const pool = readTaskFile(FIXTURE)
    const item = pool[0]!
    const ex = fewshotExamples(item, { shots: 2, pool, seed: 3 })
    expect(ex).toHaveLength(2)
    expect(ex.some((e) => e.context === item.context)).toBe(false)
    // the same content elsewhere (another shard, another index) gets the same examples
    expect(fewshotExamples({ ...item, id: "shard-2:7" }, { shots: 2, pool, seed: 3 })).toEqual(ex)
    const ctx = choiceContext(item, { shots: 2, pool, seed: 3, description: "Answer the questions." })
    expect(ctx).toBe(["Answer the questions.", ...ex.map((e) => `${e.context} ${e.choices[e.gold]}`), item.context].join("\n\n"))
    expect(() => fewshotExamples(item, { shots: 4, pool, seed: 3 })).toThrow("the few-shot pool has 3")
    // some seed draws other examples
    const others = [4, 5, 6, 7, 8].map((seed) => fewshotExamples(item, { shots: 2, pool, seed }).map((e) => e.id).join())
    expect(new Set([ex.map((e) => e.id).join(), ...others]).size).toBeGreaterThan(1)
  })
})

describe("acc, acc_norm, acc_bytes", () => {
  test("argmax of ll, ll/characters and ll/UTF-8 bytes; ties go to the first choice", () => {
    const item: ChoiceItem = { id: "x", context: "", choices: ["éé", "abc", "d"], gold: 0 }
    // ll/chars: −3, −1.5, −3.5 → 1; ll/bytes: −1.5, −1.5, −3.5 → tie → 0; ll: −6, −4.5, −3.5 → 2
    const r = choiceResult(item, [-6, -4.5, -3.5], [4, 3, 1], 0)
    expect([r.pred, r.predNorm, r.predBytes]).toEqual([2, 1, 0])
    const s = summarizeChoices([r, choiceResult({ ...item, gold: 2 }, [-6, -4.5, -3.5], [4, 3, 1], 0)])
    expect([s.acc.successes, s.acc_norm.successes, s.acc_bytes.successes]).toEqual([1, 0, 1])
    expect(s.acc).toMatchObject({ n: 2, unit: "items", method: "wilson" })
  })
})

describe("on the Dawn device", () => {
  test("log-likelihoods equal sums over the float64 reference model's log-probs, hand-built sequences (1e-4)", async () => {
    const dir = tempDir()
    try {
      const rm = writeRandomModel(dir, { hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96, vocab: 258, seed: 11 })
      const model = await loadLlama(await gpu(), dir)
      try {
        const items = readTaskFile(FIXTURE)
        const pool = items.slice(1)
        const opts = { rope: (n: number) => model.rope(n), shots: 1, pool, seed: 5 }
        const got = await scoreChoiceItems(model, tok, items, opts)
        let checked = 0
        for (const [k, item] of items.entries()) {
          // by hand: BOS, then the context without trailing spaces, then those spaces + " " + choice
          const context = choiceContext(item, opts)
          const head = context.trimEnd()
          const lls = item.choices.map((c) => {
            const seq = [BYTE_BOS, ...bytes(head), ...bytes(context.slice(head.length) + " " + c)]
            const lp = referenceLogprobs(rm, seq)
            let sum = 0
            for (let t = 1 + bytes(head).length; t < seq.length; t++) sum += lp[t - 1]!
            return sum
          })
          for (let i = 0; i < lls.length; i++) {
            expect(Math.abs(got[k]!.loglikelihoods[i]! - lls[i]!)).toBeLessThan(1e-4)
            checked++
          }
          expect(got[k]!.pred).toBe(lls.indexOf(Math.max(...lls)))
        }
        expect(checked).toBe(12)
        // the reference is not degenerate: choices differ by more than the tolerance
        expect(Math.max(...got[0]!.loglikelihoods) - Math.min(...got[0]!.loglikelihoods)).toBeGreaterThan(1)
      } finally {
        model.dispose()
      }
    } finally {
      removeDir(dir)
    }
  })

  test("a task file split into shards gives identical results", async () => {
    const model = await loadLlama(await gpu(), TINY_DIR)
    try {
      const dir = tmp()
      const lines = readFileSync(FIXTURE, "utf8").split("\n").filter((l) => l.trim() !== "")
      writeFileSync(join(dir, "a.jsonl"), `${lines.slice(0, 1).join("\n")}\n`)
      writeFileSync(join(dir, "b.jsonl"), `${lines.slice(1).join("\n")}\n`)
      // the pool is the whole file: an item is never its own example, in a shard or not
      const opts = { rope: (n: number) => model.rope(n), shots: 2, pool: readTaskFile(FIXTURE), seed: 9, maxLength: 512 }
      const whole = await scoreChoiceItems(model, tok, readTaskFile(FIXTURE), opts)
      const shards = await scoreChoiceItems(model, tok, readTaskFiles([join(dir, "a.jsonl"), join(dir, "b.jsonl")]), opts)
      const strip = (rs: typeof whole) => rs.map(({ id: _, ...r }) => r)
      expect(strip(shards)).toEqual(strip(whole))
      expect(summarizeChoices(shards)).toEqual(summarizeChoices(whole))
    } finally {
      model.dispose()
    }
  })

  test("the tiny model picks the pass key above chance on the built-in task (Wilson lower end > 1/4)", async () => {
    const model = await loadLlama(await gpu(), TINY_DIR)
    try {
      const items = passkeyChoiceItems({ tokenizer: tok, seed: 1, count: 12, length: 300 })
      expect(new Set(items.map((i) => i.gold)).size).toBeGreaterThan(1)
      const s = summarizeChoices(await scoreChoiceItems(model, tok, items, { rope: (n) => model.rope(n), maxLength: 512 }))
      expect(s.items).toBe(12)
      expect(s.acc.lo).toBeGreaterThan(0.25)
      expect(s.acc_norm.lo).toBeGreaterThan(0.25)
    } finally {
      model.dispose()
    }
  })
})
