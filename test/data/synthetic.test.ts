import { describe, expect, test } from "bun:test"
import { join } from "node:path"
import { Packer } from "../../plugins/data/pack.ts"
import { drawPasskey, type KeyDraw, type SyntheticOptions, syntheticCorpus, syntheticDocument, syntheticSource } from "../../plugins/data/synthetic.ts"
import { Rng } from "../../common/rng.ts"
import { PAPER_GARBAGE, paperGarbage } from "../../plugins/data/text.ts"
import { byteTokenizer, loadHfTokenizer } from "../../plugins/data/tokenizer.ts"

const byte = byteTokenizer()
const hf = loadHfTokenizer(join(import.meta.dirname, "../fixtures/tokenizer"))
const sp = loadHfTokenizer(join(import.meta.dirname, "../fixtures/tokenizer/sentencepiece"))
const docs = (opts: SyntheticOptions, n: number) => Array.from({ length: n }, (_, i) => syntheticDocument(opts, i))

describe("synthetic corpus", () => {
  test("deterministic from the seed; another seed gives other documents", () => {
    const opts = { tokenizer: byte, seed: 11, length: 400 }
    const a = docs(opts, 8)
    expect(docs(opts, 8)).toEqual(a)
    expect(syntheticDocument(opts, 5)).toEqual(a[5]!) // random access: document i alone is the same
    expect(docs({ ...opts, seed: 12 }, 8).map((d) => d.text)).not.toEqual(a.map((d) => d.text))
  })

  for (const [name, tok] of [["byte", byte], ["byte-level BPE fixture", hf], ["sentencepiece fixture", sp]] as const) {
    test(`${name}: exact length, and every answer span decodes to its answer`, () => {
      const all = docs({ tokenizer: tok, seed: 3, length: 700, kvQueries: 2 }, 40)
      const tasks = new Set(all.map((d) => d.task))
      expect([...tasks].sort()).toEqual(["filler", "kv", "needle", "passkey"])
      for (const d of all) {
        expect(d.ids.length).toBe(700)
        expect(d.answers.length).toBe({ filler: 0, passkey: 1, needle: 1, kv: 2, copy: -1 }[d.task])
        for (const a of d.answers) {
          expect(tok.decode(d.ids.slice(a.start, a.end))).toBe(a.answer)
          expect(a.end).toBeLessThanOrEqual(d.ids.length)
        }
        // Pieces are encoded as continuations, so no tokenizer gains a space at a piece boundary.
        expect(tok.decode(d.ids)).toBe(d.text)
      }
    })
  }

  test("copy drill: only when asked for; each key is given, then asked for after filler", () => {
    const all = docs({ tokenizer: byte, seed: 5, length: 400, tasks: { copy: 1 }, copies: 5 }, 6)
    for (const d of all) {
      expect(d.task).toBe("copy")
      expect(d.ids.length).toBe(400)
      expect(d.answers.length).toBe(5)
      for (const a of d.answers) {
        expect(byte.decode(d.ids.slice(a.start, a.end))).toBe(a.answer)
        expect(byte.decode(d.ids.slice(0, a.start))).toContain(`The pass key is ${a.answer}.`)
        expect(byte.decode(d.ids.slice(a.start - 17, a.start))).toContain("The pass key is")
      }
    }
  })

  test("the hidden fact is in the text at its reported depth, before the question", () => {
    for (const d of docs({ tokenizer: byte, seed: 5, length: 1500, tasks: { passkey: 1, needle: 1 } }, 20)) {
      const answer = d.answers[0]!.answer
      const fact = d.task === "passkey" ? `The pass key is ${answer}. Remember it.` : `is: ${answer}.\n`
      const at = d.text.indexOf(fact)
      expect(at).toBeGreaterThan(0)
      // Byte-level on ASCII text: character index = token index.
      const lineStart = d.text.lastIndexOf("\n", at)
      expect(Math.abs(lineStart / d.ids.length - d.depths[0]!)).toBeLessThan(2 / d.ids.length)
      expect(at).toBeLessThan(d.answers[0]!.start)
    }
  })

  test("depths spread over the document", () => {
    const depths = docs({ tokenizer: byte, seed: 6, length: 2000, tasks: { passkey: 1 } }, 40).map((d) => d.depths[0]!)
    expect(Math.min(...depths)).toBeLessThan(0.25)
    expect(Math.max(...depths)).toBeGreaterThan(0.75)
  })

  test("key–value recall asks about keys that were given, with their values", () => {
    for (const d of docs({ tokenizer: byte, seed: 8, length: 900, tasks: { kv: 1 }, kvPairs: 5, kvQueries: 3 }, 10)) {
      expect(d.depths.length).toBe(5)
      for (const a of d.answers) {
        const q = d.text.slice(0, a.start).match(/What is the value of key ([a-z-]+)\? The value of key \1 is $/)
        expect(q).not.toBeNull()
        expect(d.text).toContain(`The value of key ${q![1]} is ${a.answer}.\n`)
      }
    }
  })

  test("filler: varied sentences, or the paper's garbage", () => {
    const varied = syntheticDocument({ tokenizer: byte, seed: 1, length: 3000, tasks: { filler: 1 }, filler: "varied" }, 0)
    const sentences = new Set(varied.text.split(/(?<=[.?!"]) /))
    expect(sentences.size).toBeGreaterThan(20)
    const paper = syntheticDocument({ tokenizer: byte, seed: 1, length: 3000, tasks: { filler: 1 }, filler: "paper" }, 0)
    expect(paper.text).toBe(paperGarbage(3000))
    expect(paper.text.startsWith(PAPER_GARBAGE)).toBe(true)
  })

  test("passkeys: uniform over 1..50000 by default; keys: digits makes every digit count as likely", () => {
    const count = (keys: KeyDraw | undefined): number[] => {
      const rng = Rng.seeded(4)
      const by = [0, 0, 0, 0, 0, 0]
      for (let i = 0; i < 5000; i++) {
        const k = drawPasskey(rng, keys)
        expect(k >= 1 && k <= 50000 && Number.isInteger(k)).toBe(true)
        by[String(k).length]!++
      }
      return by
    }
    const uniform = count(undefined)
    expect(uniform[5]! / 5000).toBeGreaterThan(0.78) // 40001 of the 50000 keys have 5 digits
    for (const n of count("digits").slice(1)) expect(Math.abs(n / 5000 - 0.2)).toBeLessThan(0.03)
    // the documents carry them: a 1-digit key appears among 60 digits-drawn passkey documents
    const keys = docs({ tokenizer: byte, seed: 2, length: 400, tasks: { passkey: 1 }, keys: "digits" }, 60).map((d) => d.answers[0]!.answer)
    expect(keys.some((k) => k.length === 1)).toBe(true)
  })

  test("a length range draws each document's length from it", () => {
    const lens = docs({ tokenizer: byte, seed: 2, length: [300, 900] }, 20).map((d) => d.ids.length)
    expect(Math.min(...lens)).toBeGreaterThanOrEqual(300)
    expect(Math.max(...lens)).toBeLessThanOrEqual(900)
    expect(new Set(lens).size).toBeGreaterThan(5)
  })

  test("too short a length for the task is an error", () => {
    expect(() => syntheticDocument({ tokenizer: byte, seed: 0, length: 50, tasks: { passkey: 1 } }, 0)).toThrow(/needs at least \d+ tokens/)
  })

  test("feeds the packer as ids and as a text corpus", () => {
    const opts = { tokenizer: byte, seed: 4, length: 300 }
    const s = new Packer({ source: syntheticSource(opts, 6), seqLen: 128, bos: byte.bos, eos: byte.eos, seed: 0, shuffle: false }).next()
    expect([...s.tokens.slice(1, 128)]).toEqual(syntheticDocument(opts, 0).ids.slice(0, 127))
    expect(syntheticCorpus(opts, 6).text(2)).toBe(syntheticDocument(opts, 2).text)
  })
})
