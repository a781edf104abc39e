import { afterAll, describe, expect, test } from "bun:test"
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { BYTE_BOS, BYTE_EOS, BYTE_VOCAB_SIZE, byteTokenizer, loadHfTokenizer, loadTokenizer, withBos } from "../../plugins/data/tokenizer.ts"
import { Rng } from "../../common/rng.ts"

const FIXTURE = join(import.meta.dirname, "../fixtures/tokenizer")
const dirs: string[] = []
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "ropeway-tok-"))
  dirs.push(d)
  return d
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))

/** Random strings over ASCII, Latin-1, CJK, emoji (surrogate pairs) and control characters. */
const randomText = (rng: Rng, n: number): string => {
  const pools = [[0x20, 0x7e], [0x0, 0x1f], [0xa0, 0x24f], [0x4e00, 0x4fff], [0x1f300, 0x1f64f]] as const
  let s = ""
  for (let i = 0; i < n; i++) {
    const [lo, hi] = rng.pick(pools)
    s += String.fromCodePoint(rng.int(lo, hi))
  }
  return s
}

describe("byte tokenizer", () => {
  const tok = byteTokenizer()
  test("ids are UTF-8 bytes; specials after them", () => {
    expect(tok.encode("Aé")).toEqual([65, 0xc3, 0xa9])
    expect([tok.bos, tok.eos, tok.vocabSize]).toEqual([BYTE_BOS, BYTE_EOS, BYTE_VOCAB_SIZE])
    expect([BYTE_BOS, BYTE_EOS, BYTE_VOCAB_SIZE]).toEqual([256, 257, 258])
    expect(loadTokenizer("byte").name).toBe("byte")
  })
  test("exact round trip on arbitrary UTF-8", () => {
    const rng = Rng.seeded(5)
    for (let i = 0; i < 200; i++) {
      const s = randomText(rng, rng.int(0, 60))
      expect(tok.decode(tok.encode(s))).toBe(s)
    }
  })
  test("decode drops BOS/EOS and rejects ids outside the vocabulary", () => {
    expect(tok.decode(withBos(tok, [...tok.encode("hi"), BYTE_EOS]))).toBe("hi")
    expect(() => tok.decode([258])).toThrow()
    expect(tok.decode([])).toBe("")
  })
})

describe("Hugging Face tokenizer.json (fixture)", () => {
  const tok = loadHfTokenizer(FIXTURE)
  test("specials from tokenizer_config.json", () => {
    expect(tok.bos).toBe(268)
    expect(tok.eos).toBe(269)
    expect(tok.vocabSize).toBe(270)
    expect(tok.pad).toBeUndefined()
  })
  test("BPE merges apply and encode adds no specials", () => {
    // "Ġthe" (258) and "Ġis" (266) are merged tokens of the fixture; "T" is byte 84.
    expect(tok.encode("The sky is the limit")).toEqual([84, 257, 262, 107, 121, 266, 258, 32, 108, 105, 109, 105, 116])
  })
  test("round trip, including non-ASCII and whitespace runs", () => {
    const rng = Rng.seeded(6)
    for (const s of ["", "  two  spaces\n\tnew", "héllo wörld 🌍 日本"]) expect(tok.decode(tok.encode(s))).toBe(s)
    for (let i = 0; i < 50; i++) {
      const s = randomText(rng, rng.int(1, 40))
      expect(tok.decode(tok.encode(s))).toBe(s)
    }
    expect(tok.decode([268, ...tok.encode("x"), 269])).toBe("x")
  })
  test("without a config, BOS comes from the post-processor and EOS from the usual names", () => {
    const dir = tmp()
    copyFileSync(join(FIXTURE, "tokenizer.json"), join(dir, "tokenizer.json"))
    const t = loadTokenizer(dir)
    expect(t.bos).toBe(268)
    expect(t.eos).toBe(269)
  })
  test("SentencePiece-style fixture (Prepend/Replace normalizer, byte fallback): specials and round trip", () => {
    const t = loadHfTokenizer(join(FIXTURE, "sentencepiece"))
    expect([t.bos, t.eos]).toEqual([1, 2])
    expect(t.encode("x")[0]).toBe(t.encode(" ")[0]!) // the "▁" prefix
    for (const s of ["The pass key is 123.", "héllo wörld 🌍", "  two  spaces\n\tnew"]) expect(t.decode(t.encode(s))).toBe(s)
  })
  test("errors name the file", () => {
    const dir = tmp()
    expect(() => loadHfTokenizer(dir)).toThrow(join(dir, "tokenizer.json"))
    writeFileSync(join(dir, "tokenizer.json"), "{not json")
    expect(() => loadHfTokenizer(dir)).toThrow(/tokenizer\.json: invalid JSON/)
    copyFileSync(join(FIXTURE, "tokenizer.json"), join(dir, "tokenizer.json"))
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<nope>" }))
    expect(() => loadHfTokenizer(dir)).toThrow(/tokenizer_config\.json: bos_token "<nope>" is not in the vocabulary/)
  })
})
