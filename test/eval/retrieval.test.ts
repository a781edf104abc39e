// RULER-shaped retrieval prompts: sizes in tokens (byte-level and BPE), the needles each task hides and
// asks for, depth placement and a depth grid sharing keys, every haystack kind including a user's file,
// deterministic trials, bad input; and RULER's string_match_all scoring with intervals.
import { afterAll, describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { Rng } from "../../common/rng.ts"
import { PAPER_GARBAGE } from "../../plugins/data/text.ts"
import { byteTokenizer, loadHfTokenizer } from "../../plugins/data/tokenizer.ts"
import {
  type Haystack,
  RETRIEVAL_TASKS,
  containsWord,
  readHaystack,
  retrievalPrompt,
  retrievalTrial,
  scoreRetrieval,
  summarizeRetrieval,
} from "../../plugins/eval/retrieval.ts"
import { removeDir, tempDir } from "../models/random-model.ts"

const tok = byteTokenizer()
const sp = loadHfTokenizer(join(import.meta.dirname, "../fixtures/tokenizer/sentencepiece"))
const NEEDLE = /One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\./g
const needlesIn = (text: string) => [...text.matchAll(NEEDLE)].map((m) => ({ key: m[1]!, value: m[2]! }))
const dirs: string[] = []
afterAll(() => dirs.forEach(removeDir))

describe("retrieval prompts", () => {
  test("every task fills its length exactly: prompt (BOS included) + maxNew = length, byte-level and BPE", () => {
    for (const t of [tok, sp]) {
      for (const task of RETRIEVAL_TASKS) {
        const p = retrievalTrial({ tokenizer: t, task, length: 700, seed: 1, trial: 0 })
        expect(p.ids.length + p.maxNew).toBe(700)
        expect(p.ids[0]).toBe(t.bos!)
        if (t === tok) expect(p.ids.slice(1)).toEqual(Array.from(new TextEncoder().encode(p.text)))
        // what the model reads holds every needle asked about
        const read = t.decode(p.ids)
        for (const [i, v] of p.expected.entries()) expect(read).toContain(`${p.task === "multivalue" ? p.asked[0] : p.asked[i]} is: ${v}.`)
      }
    }
  })

  test("single / multikey / multivalue / multiquery hide and ask for what RULER's tasks do", () => {
    const at = (task: (typeof RETRIEVAL_TASKS)[number]) => retrievalTrial({ tokenizer: tok, task, length: 900, seed: 2, trial: 1 })
    const single = at("single")
    expect(needlesIn(single.text)).toEqual([{ key: single.asked[0]!, value: single.expected[0]! }])
    expect(single.text.startsWith("A special magic number is hidden within the following text.")).toBe(true)
    expect(single.text.endsWith(`\nThe special magic number for ${single.asked[0]} mentioned in the provided text is:`)).toBe(true)

    const mk = at("multikey")
    const mkNeedles = needlesIn(mk.text)
    expect(mkNeedles).toHaveLength(4)
    expect(new Set(mkNeedles.map((n) => n.key)).size).toBe(4)
    expect(new Set(mkNeedles.map((n) => n.value)).size).toBe(4)
    expect(mk.asked).toHaveLength(1)
    expect(mkNeedles.find((n) => n.key === mk.asked[0])!.value).toBe(mk.expected[0]!)
    expect(mk.needles).toBe(4)

    const mv = at("multivalue")
    const mvNeedles = needlesIn(mv.text)
    expect(mvNeedles).toHaveLength(4)
    expect(new Set(mvNeedles.map((n) => n.key))).toEqual(new Set(mv.asked))
    expect(mvNeedles.map((n) => n.value).sort()).toEqual([...mv.expected].sort())
    expect(mv.text.startsWith("Some special magic numbers are hidden within the following text. Make sure to memorize it. I will quiz you about the numbers afterwards.\n")).toBe(true)
    expect(mv.text.endsWith(`The special magic numbers for ${mv.asked[0]} mentioned in the provided text are:`)).toBe(true)

    const mq = retrievalTrial({ tokenizer: tok, task: "multiquery", queries: 3, length: 900, seed: 2, trial: 1 })
    expect(mq.asked).toHaveLength(3)
    expect(mq.expected).toHaveLength(3)
    expect(mq.text.endsWith(`The special magic numbers for ${mq.asked[0]}, ${mq.asked[1]}, and ${mq.asked[2]} mentioned in the provided text are:`)).toBe(true)
    // room to answer: every expected value and its separators fit in maxNew
    expect(mq.maxNew).toBeGreaterThanOrEqual(` ${mq.expected.join(", ")}.`.length)
  })

  test("the asked needles sit at the depth; a depth grid shares keys, values and the distractors' places", () => {
    const grid = [0, 0.25, 0.5, 0.75, 1].map((depth) => retrievalTrial({ tokenizer: tok, task: "multikey", length: 2000, seed: 4, trial: 3, depth }))
    for (const p of grid) {
      expect(p.expected).toEqual(grid[0]!.expected)
      expect(needlesIn(p.text).map((n) => n.key).sort()).toEqual(needlesIn(grid[0]!.text).map((n) => n.key).sort())
      // within a filler sentence or two of the requested share of the haystack (head and tail are short)
      expect(Math.abs(p.needleDepths[0]! - (0.08 + 0.86 * p.depth!))).toBeLessThan(0.08)
    }
    for (let i = 1; i < grid.length; i++) expect(grid[i]!.needleDepths[0]!).toBeGreaterThan(grid[i - 1]!.needleDepths[0]!)
    // multivalue at one depth: the values one after another
    const mv = retrievalTrial({ tokenizer: tok, task: "multivalue", length: 2000, seed: 4, trial: 3, depth: 0.5 })
    expect(mv.text).toContain(mv.expected.map((v) => `One of the special magic numbers for ${mv.asked[0]} is: ${v}.\n`).join("\n"))
  })

  test("trials are deterministic and differ; without a depth the needles land at random", () => {
    const a = retrievalTrial({ tokenizer: tok, task: "single", length: 1200, seed: 7, trial: 0 })
    expect(retrievalTrial({ tokenizer: tok, task: "single", length: 1200, seed: 7, trial: 0 })).toEqual(a)
    const depths = Array.from({ length: 12 }, (_, t) => retrievalTrial({ tokenizer: tok, task: "single", length: 1200, seed: 7, trial: t }))
    expect(new Set(depths.map((p) => p.expected[0])).size).toBe(12)
    const d = depths.map((p) => p.needleDepths[0]!)
    expect(Math.max(...d) - Math.min(...d)).toBeGreaterThan(0.4)
    expect(a.depth).toBeUndefined()
  })

  test("haystacks: the paper's filler, varied sentences, other needles (looking exactly like the real ones), a text file", () => {
    const make = (haystack: Haystack) =>
      retrievalPrompt({ tokenizer: tok, task: "multikey", length: 1500, rng: Rng.seeded(3), depth: 0.5, haystack })
    expect(make({ kind: "paper" }).text).toContain(PAPER_GARBAGE)
    const varied = make({ kind: "varied" }).text
    expect(varied).not.toContain("The grass is green.")
    expect(varied.split(".").length).toBeGreaterThan(20)

    const needles = make({ kind: "needles" })
    const all = needlesIn(needles.text)
    expect(all.length).toBeGreaterThan(15)
    expect(new Set(all.map((n) => n.key)).size).toBe(all.length) // no key twice, so the question has one answer
    expect(needles.text).not.toContain("\n\n") // inserted needles are not set apart by blank lines
    expect(all.find((n) => n.key === needles.asked[0])!.value).toBe(needles.expected[0]!)

    const dir = tempDir("ropeway-haystack-")
    dirs.push(dir)
    writeFileSync(join(dir, "essay.txt"), "The first sentence is here.  It goes on!\n\nA third one? Yes.")
    const text = make(readHaystack(join(dir, "essay.txt"))).text
    expect(text).toContain("The first sentence is here. It goes on! A third one? Yes. The first sentence is here.")
    writeFileSync(join(dir, "blank.txt"), " \n")
    expect(() => readHaystack(join(dir, "blank.txt"))).toThrow(`${join(dir, "blank.txt")}: the haystack text file is empty`)
    expect(() => readHaystack(join(dir, "none.txt"))).toThrow("cannot read")
  })

  test("bad requests are refused with what they need", () => {
    expect(() => retrievalTrial({ tokenizer: tok, task: "multikey", length: 300, seed: 1, trial: 0 })).toThrow(/multikey retrieval at length 300: .* need \d+ tokens/)
    expect(() => retrievalTrial({ tokenizer: tok, task: "single", length: 900, seed: 1, trial: 0, depth: 1.5 })).toThrow("depth")
    expect(() => retrievalTrial({ tokenizer: tok, task: "multivalue", values: 1, length: 900, seed: 1, trial: 0 })).toThrow("values")
    expect(() => retrievalTrial({ tokenizer: tok, task: "single", length: 900, seed: 1, trial: 0, maxNew: 0 })).toThrow("maxNew")
  })
})

describe("scoring (RULER's string_match_all, whole words)", () => {
  test("a value counts as a whole word only, case-insensitively", () => {
    expect(containsWord(" 1234567.", "1234567")).toBe(true)
    expect(containsWord(" 12345678", "1234567")).toBe(false)
    expect(containsWord("x1234567", "1234567")).toBe(false)
    expect(containsWord("Answer: Quiet-Heron,", "quiet-heron")).toBe(true)
    expect(containsWord("a+b (c)", "(c)")).toBe(true)
  })
  test("share found, all-found, and the summary's intervals", () => {
    const s = scoreRetrieval(["1111111", "2222222"], " 2222222, 1111112.")
    expect(s).toEqual({ found: [false, true], score: 0.5, correct: false })
    expect(scoreRetrieval(["1111111", "2222222"], " 2222222 and 1111111").correct).toBe(true)
    expect(() => scoreRetrieval([], "x")).toThrow()
    const scores = [s, scoreRetrieval(["1"], "1"), scoreRetrieval(["1"], "2"), scoreRetrieval(["1", "2", "3", "4"], "1 2 3")]
    const sum = summarizeRetrieval(scores, { seed: 3 })
    expect(sum.accuracy).toMatchObject({ value: 0.25, successes: 1, n: 4, method: "wilson" })
    expect(sum.partial).toMatchObject({ value: (0.5 + 1 + 0 + 0.75) / 4, n: 4, unit: "trials", method: "bootstrap-percentile", seed: 3 })
  })
})
