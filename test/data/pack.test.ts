import { describe, expect, test } from "bun:test"
import { memoryCorpus } from "../../plugins/data/corpus.ts"
import { type DataCursor, type DocumentSource, type PackedSequence, Packer, epochOrder, tokenizedCorpus } from "../../plugins/data/pack.ts"
import { BYTE_BOS, BYTE_EOS, byteTokenizer } from "../../plugins/data/tokenizer.ts"

const tok = byteTokenizer()
// Documents of very different lengths, one longer than a sequence, one empty.
const DOCS = ["alpha", "a much longer document that certainly spans more than one packed sequence of thirty-two", "", "gamma ray", "δ", "epsilon epsilon"]
const source = tokenizedCorpus(memoryCorpus("docs", DOCS), tok)
const SEQ = 32
const packer = (extra: Partial<ConstructorParameters<typeof Packer>[0]> = {}) =>
  new Packer({ source, seqLen: SEQ, bos: BYTE_BOS, eos: BYTE_EOS, seed: 1, ...extra })
const take = (p: Packer, n: number) => Array.from({ length: n }, () => p.next())
/** The framed documents of one epoch in packing order, concatenated. */
const epochStream = (seed: number, epoch: number): number[] =>
  [...epochOrder(DOCS.length, seed, epoch)].flatMap((i) => [BYTE_BOS, ...tok.encode(DOCS[i] as string), BYTE_EOS])

describe("packing", () => {
  test("fixed lengths; segments sum to seqLen; the stream is the framed documents in epoch order", () => {
    const seqs = take(packer(), 12)
    const flat: number[] = []
    for (const s of seqs) {
      expect(s.tokens.length).toBe(SEQ)
      expect(s.positions.length).toBe(SEQ)
      expect(s.docLengths.reduce((a, b) => a + b, 0)).toBe(SEQ)
      expect(s.docIds.length).toBe(s.docLengths.length)
      flat.push(...s.tokens)
    }
    const expected = [...epochStream(1, 0), ...epochStream(1, 1), ...epochStream(1, 2), ...epochStream(1, 3)]
    expect(flat).toEqual(expected.slice(0, flat.length))
  })

  test("BOS opens and EOS closes every document; each epoch visits every document once", () => {
    const s0 = epochStream(1, 0)
    expect(s0.filter((t) => t === BYTE_BOS).length).toBe(DOCS.length)
    expect(s0.filter((t) => t === BYTE_EOS).length).toBe(DOCS.length)
    expect([...epochOrder(DOCS.length, 1, 0)].sort()).toEqual([0, 1, 2, 3, 4, 5])
  })

  test("position ids restart at 0 at every segment and never reach seqLen", () => {
    for (const s of take(packer(), 10)) {
      let at = 0
      for (const len of s.docLengths) {
        for (let k = 0; k < len; k++) expect(s.positions[at + k]).toBe(k)
        at += len
      }
      // A segment that starts with BOS starts a document; any other is the continuation of a cut one.
      at = 0
      s.docLengths.forEach((len, j) => {
        if (j > 0) expect(s.tokens[at]).toBe(BYTE_BOS)
        at += len
      })
      expect(Math.max(...s.positions)).toBeLessThan(SEQ)
    }
  })

  test("restartPositions false gives 0..seqLen-1", () => {
    const s = packer({ restartPositions: false }).next()
    expect([...s.positions]).toEqual(Array.from({ length: SEQ }, (_, i) => i))
  })

  test("maxDocTokens truncates each framed document", () => {
    const p = packer({ maxDocTokens: 10, shuffle: false })
    const s = p.next()
    // alpha framed = 7 tokens; the long one is cut to 10 (BOS + 9 bytes, no EOS).
    expect(s.docLengths.slice(0, 3)).toEqual([7, 10, 2])
    expect([...s.tokens.slice(7, 17)]).toEqual([BYTE_BOS, ...tok.encode(DOCS[1] as string).slice(0, 9)])
  })

  test("shuffling: same seed same order, different seed or epoch different, shuffle false keeps corpus order", () => {
    const n = 50
    expect([...epochOrder(n, 7, 0)]).toEqual([...epochOrder(n, 7, 0)])
    expect([...epochOrder(n, 7, 0)]).not.toEqual([...epochOrder(n, 8, 0)])
    expect([...epochOrder(n, 7, 0)]).not.toEqual([...epochOrder(n, 7, 1)])
    expect([...epochOrder(n, 7, 0, false)]).toEqual(Array.from({ length: n }, (_, i) => i))
    // Pinned: document order must be the same on every machine and run.
    expect([...epochOrder(8, 1234, 0)]).toEqual(GOLDEN_ORDER)
    const a = take(packer({ seed: 2 }), 3).map((s) => [...s.tokens])
    const b = take(packer({ seed: 2 }), 3).map((s) => [...s.tokens])
    const c = take(packer({ seed: 3 }), 3).map((s) => [...s.tokens])
    expect(a).toEqual(b)
    expect(a).not.toEqual(c)
  })
})

describe("data cursor", () => {
  const same = (x: PackedSequence[], y: PackedSequence[]) => {
    expect(x.map((s) => [...s.tokens])).toEqual(y.map((s) => [...s.tokens]))
    expect(x.map((s) => [...s.positions])).toEqual(y.map((s) => [...s.positions]))
    expect(x.map((s) => s.docLengths)).toEqual(y.map((s) => s.docLengths))
  }

  test("resume from a saved cursor equals the uninterrupted run, at every split point and across epochs", () => {
    const full = take(packer(), 14)
    for (const k of [1, 3, 5, 9, 13]) {
      const p = packer()
      const head = take(p, k)
      const saved: DataCursor = JSON.parse(JSON.stringify(p.cursor()))
      const resumed = take(packer({ cursor: saved }), 14 - k)
      same([...head, ...resumed], full)
    }
    expect(full.at(-1)?.start.epoch).toBeGreaterThan(0)
  })

  test("each sequence records the cursor it started from", () => {
    const p = packer()
    take(p, 4)
    const s = p.next()
    same([packer({ cursor: s.start }).next()], [s])
  })

  test("a cursor that does not fit the corpus is an error", () => {
    expect(() => packer({ cursor: { epoch: 0, doc: 99, offset: 0 } })).toThrow("data cursor")
    expect(() => packer({ cursor: { epoch: 0, doc: 0, offset: 10_000 } })).toThrow("past the end")
    expect(() => packer({ cursor: { epoch: -1, doc: 0, offset: 0 } })).toThrow("data cursor")
  })
})

test("a corpus that yields no tokens at all is an error, not an endless loop", () => {
  const empty: DocumentSource = { size: 3, tokens: () => [] }
  expect(() => new Packer({ source: empty, seqLen: 8, bos: undefined, eos: undefined, seed: 0 }).next()).toThrow("nothing to pack")
})

const GOLDEN_ORDER = [5, 1, 2, 7, 3, 6, 0, 4]

describe("answer weights", () => {
  test("answer tokens of synthetic documents weigh answerWeight, everything else 1, shifted past BOS", async () => {
    const { syntheticSource, syntheticDocument } = await import("../../plugins/data/synthetic.ts")
    const opts = { tokenizer: tok, seed: 3, length: 300, tasks: { passkey: 1 } }
    const src = syntheticSource(opts, 4)
    const p = new Packer({ source: src, seqLen: 302, bos: BYTE_BOS, eos: BYTE_EOS, seed: 1, shuffle: false, answerWeight: 7 })
    const seq = p.next()
    const doc = syntheticDocument(opts, 0)
    expect(doc.answers.length).toBe(1)
    const a = doc.answers[0]!
    for (let k = 0; k < 302; k++) expect(seq.weights![k]).toBe(k >= a.start + 1 && k < a.end + 1 ? 7 : 1)
    // the weighted tokens are the key's digits
    expect(tok.decode([...seq.tokens.subarray(a.start + 1, a.end + 1)])).toBe(a.answer)
    expect(() => new Packer({ source, seqLen: 8, bos: BYTE_BOS, eos: BYTE_EOS, seed: 1, answerWeight: 2 })).toThrow(/no answer spans/)
  })

  test("answerStop weighs the token after each answer too: the one that ends the key", async () => {
    const { syntheticSource, syntheticDocument } = await import("../../plugins/data/synthetic.ts")
    const opts = { tokenizer: tok, seed: 3, length: 300, tasks: { passkey: 1 } }
    const p = new Packer({ source: syntheticSource(opts, 4), seqLen: 302, bos: BYTE_BOS, eos: BYTE_EOS, seed: 1, shuffle: false, answerWeight: 7, answerStop: true })
    const seq = p.next()
    const a = syntheticDocument(opts, 0).answers[0]!
    for (let k = 0; k < 302; k++) expect(seq.weights![k]).toBe(k >= a.start + 1 && k < a.end + 2 ? 7 : 1)
    expect(tok.decode([seq.tokens[a.end + 1]!])).toBe(".")
    expect(() => new Packer({ source: syntheticSource(opts, 4), seqLen: 8, bos: BYTE_BOS, eos: BYTE_EOS, seed: 1, answerStop: true })).toThrow(/data.answerStop.*answerWeight/)
  })
})
