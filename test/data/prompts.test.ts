import { describe, expect, test } from "bun:test"
import { join } from "node:path"
import { IGNORE_LABEL, PASSKEY_QUESTION, needleSample, needleSentence, passkeyPrompt, passkeyText } from "../../plugins/data/prompts.ts"
import { Rng } from "../../common/rng.ts"
import { NEEDLE_INSTRUCTION, PASSKEY_TASK, syntheticDocument } from "../../plugins/data/synthetic.ts"
import { PAPER_GARBAGE, paperGarbage } from "../../plugins/data/text.ts"
import { byteTokenizer, loadHfTokenizer, withBos } from "../../plugins/data/tokenizer.ts"

const byte = byteTokenizer()
const hf = loadHfTokenizer(join(import.meta.dirname, "../fixtures/tokenizer"))
const sp = loadHfTokenizer(join(import.meta.dirname, "../fixtures/tokenizer/sentencepiece"))

describe("passkey prompt (§5.2)", () => {
  test("five lines: task, garbage prefix, info, garbage suffix, question; both garbage parts from the start", () => {
    const p = passkeyPrompt({ tokenizer: byte, targetTokens: 1000, rng: Rng.seeded(42), depth: 0.3 })
    const lines = p.text.split("\n")
    expect(lines.length).toBe(5)
    const [task, prefix, info, suffix, question] = lines as [string, string, string, string, string]
    expect(task).toBe(PASSKEY_TASK)
    expect(info).toBe(`The pass key is ${p.key}. Remember it. ${p.key} is the pass key.`)
    expect(question).toBe(PASSKEY_QUESTION)
    expect(prefix).toBe(paperGarbage(prefix.length))
    expect(suffix).toBe(paperGarbage(suffix.length))
    expect(prefix.length + suffix.length).toBe(p.garbageChars)
    expect(prefix.length).toBe(Math.floor(0.3 * p.garbageChars))
    expect(paperGarbage(200)).toBe([PAPER_GARBAGE, PAPER_GARBAGE, PAPER_GARBAGE].join(" ").slice(0, 200))
    expect(p.answer).toBe(String(p.key))
  })

  for (const [name, tok] of [["byte", byte], ["byte-level BPE fixture", hf], ["sentencepiece fixture", sp]] as const) {
    test(`${name}: below the target, and the largest garbage that is`, () => {
      for (const target of [300, 777, 4096]) {
        const p = passkeyPrompt({ tokenizer: tok, targetTokens: target, rng: Rng.seeded(target), depth: 0.5 })
        expect(p.ids.length).toBeLessThan(target)
        expect(p.ids).toEqual(withBos(tok, tok.encode(p.text)))
        expect(p.ids[0]).toBe(tok.bos!)
        const oneMore = withBos(tok, tok.encode(passkeyText(p.key, p.garbageChars + 1, 0.5).text)).length
        expect(oneMore).toBeGreaterThanOrEqual(target)
        if (tok === byte) expect(p.ids.length).toBe(target - 1)
      }
    })
  }

  test("the key sits at the requested depth (length × depth grid)", () => {
    const target = 2048
    let last = -1
    for (const depth of [0, 0.25, 0.5, 0.75, 1]) {
      const p = passkeyPrompt({ tokenizer: byte, targetTokens: target, rng: Rng.seeded(1), depth })
      expect(byte.decode(p.ids.slice(p.infoToken)).startsWith(`The pass key is ${p.key}.`)).toBe(true)
      expect(p.infoToken).toBeGreaterThan(last)
      last = p.infoToken
      // Before the info line: BOS, the task line and its newline, then `depth` of the garbage.
      const expected = 1 + PASSKEY_TASK.length + 1 + Math.floor(depth * p.garbageChars)
      expect(Math.abs(p.infoToken - expected)).toBeLessThanOrEqual(1)
    }
  })

  test("K uniform in 1..50000 from the rng: repeatable by seed, varies across trials", () => {
    const keys = (seed: number) => {
      const rng = Rng.seeded(seed)
      return Array.from({ length: 10 }, () => passkeyPrompt({ tokenizer: byte, targetTokens: 400, rng }).key)
    }
    const a = keys(42)
    expect(keys(42)).toEqual(a)
    expect(keys(43)).not.toEqual(a)
    expect(new Set(a).size).toBeGreaterThan(5)
    for (const k of a) expect(k >= 1 && k <= 50000).toBe(true)
  })

  test("a target too small for the fixed lines is an error; charStep coarsens the search", () => {
    expect(() => passkeyPrompt({ tokenizer: byte, targetTokens: 100, rng: Rng.seeded(0) })).toThrow(/at least \d+ target tokens/)
    const p = passkeyPrompt({ tokenizer: byte, targetTokens: 3000, rng: Rng.seeded(0), depth: 0.5, charStep: 1024 })
    expect(p.garbageChars % 1024).toBe(0)
    expect(p.ids.length).toBeLessThan(3000)
    expect(p.ids.length + 1024).toBeGreaterThanOrEqual(3000)
  })
})

describe("needle-driven sample (§5.4)", () => {
  // A document with line structure to snap to.
  const doc = byte.encode(Array.from({ length: 80 }, (_, i) => `Line ${i} of the book, with some words in it.\n`).join(""))
  const seqLen = 1024

  test("BOS, instruction, front, needle, back, question with answer; exactly seqLen; labels on the answer only", () => {
    for (const tok of [byte, hf, sp]) {
      const d = tok === byte ? doc : tok.encode(byte.decode(doc))
      const s = needleSample({ tokenizer: tok, document: d, seqLen, rng: Rng.seeded(7), depth: 0.4 })
      expect(s.ids.length).toBe(seqLen)
      expect(s.ids[0]).toBe(tok.bos!)
      const text = tok.decode([...s.ids])
      expect(text.startsWith(NEEDLE_INSTRUCTION)).toBe(true)
      expect(s.answer).toMatch(/^\d{7}$/)
      expect(text).toContain(`\n${needleSentence("wandering-age", s.answer)}`) // after a line end, no stray space
      expect(text.endsWith(`The special magic number for wandering-age mentioned in the provided text is: ${s.answer}`)).toBe(true)
      const labelled = [...s.labels.keys()].filter((i) => s.labels[i] !== IGNORE_LABEL)
      expect(labelled).toEqual(Array.from({ length: s.answerSpan.end - s.answerSpan.start }, (_, k) => s.answerSpan.start + k))
      expect(tok.decode(labelled.map((i) => s.labels[i]!))).toBe(s.answer)
      expect(s.answerSpan.end).toBe(seqLen)
    }
  })

  test("the front is the document up to the cut, the back continues from it, and the cut ends a line", () => {
    const s = needleSample({ tokenizer: byte, document: doc, seqLen, rng: Rng.seeded(1), depth: 0.5 })
    const instrLen = 1 + byte.encode(NEEDLE_INSTRUCTION).length
    expect([...s.ids.slice(instrLen, s.needleStart)]).toEqual(doc.slice(0, s.cut))
    expect(doc[s.cut - 1]).toBe(10) // "\n"
    const needleLen = byte.encode(needleSentence("wandering-age", s.answer)).length
    const backStart = s.needleStart + needleLen
    const question = byte.encode("The special magic number for wandering-age mentioned in the provided text is:")
    const backLen = seqLen - backStart - question.length - 1 - s.answer.length
    expect([...s.ids.slice(backStart, backStart + backLen)]).toEqual(doc.slice(s.cut, s.cut + backLen))
    const body = seqLen - instrLen - needleLen - question.length - 1 - s.answer.length
    expect(Math.abs(s.cut - 0.5 * body)).toBeLessThan(50) // within one line of the requested depth
  })

  test("an exact cut without snapping, and depth across samples", () => {
    const s = needleSample({ tokenizer: byte, document: doc, seqLen, rng: Rng.seeded(1), cut: 123, snap: false })
    expect(s.cut).toBe(123)
    const a = needleSample({ tokenizer: byte, document: doc, seqLen, rng: Rng.seeded(1), depth: 0.1 })
    const b = needleSample({ tokenizer: byte, document: doc, seqLen, rng: Rng.seeded(1), depth: 0.9 })
    expect(a.needleStart).toBeLessThan(b.needleStart)
  })

  test("works on a synthetic document's token stream; too short a document is an error", () => {
    const d = syntheticDocument({ tokenizer: byte, seed: 1, length: 2000, tasks: { filler: 1 } }, 0)
    const s = needleSample({ tokenizer: byte, document: d.ids, seqLen: 1500, rng: Rng.seeded(2) })
    expect(s.ids.length).toBe(1500)
    expect(() => needleSample({ tokenizer: byte, document: doc.slice(0, 100), seqLen, rng: Rng.seeded(1) })).toThrow(/needle document: has 100 tokens/)
  })
})
