import { afterAll, describe, expect, test } from "bun:test"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { memoryCorpus, openCorpus } from "../../plugins/data/corpus.ts"
import { InputError } from "../../common/errors.ts"

const dirs: string[] = []
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "ropeway-corpus-"))
  dirs.push(d)
  return d
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))
const texts = (c: { size: number; text(i: number): string }) => Array.from({ length: c.size }, (_, i) => c.text(i))

describe("plain-text folders", () => {
  test("every *.txt is one document, sorted by path (code units, not locale)", () => {
    const dir = tmp()
    mkdirSync(join(dir, "sub"))
    writeFileSync(join(dir, "b.txt"), "bee")
    writeFileSync(join(dir, "a.txt"), "ay\nwith a second line")
    writeFileSync(join(dir, "B.txt"), "capital")
    writeFileSync(join(dir, "sub", "c.txt"), "nested")
    writeFileSync(join(dir, "notes.md"), "ignored")
    const c = openCorpus(dir)
    expect(texts(c)).toEqual(["capital", "ay\nwith a second line", "bee", "nested"])
    expect(c.where(3)).toBe(join(dir, "sub", "c.txt"))
  })

  test("an empty folder is an error naming it", () => {
    const dir = tmp()
    writeFileSync(join(dir, "readme.md"), "no text files here")
    expect(() => openCorpus(dir)).toThrow(InputError)
    expect(() => openCorpus(dir)).toThrow(`${dir}: corpus is empty`)
    expect(() => openCorpus(join(dir, "missing"))).toThrow("corpus not found")
  })
})

describe("JSONL", () => {
  test("one document per non-blank line, in a configurable field; CRLF and non-ASCII kept exact", () => {
    const dir = tmp()
    const f = join(dir, "data.jsonl")
    writeFileSync(f, [JSON.stringify({ text: "first" }), "", JSON.stringify({ text: "sécond 🌍", id: 2 }) + "\r", JSON.stringify({ text: "third" })].join("\n"))
    const c = openCorpus(f)
    expect(texts(c)).toEqual(["first", "sécond 🌍", "third"])
    expect(c.where(2)).toBe(`${f}:4`)
    const g = join(dir, "other.jsonl")
    writeFileSync(g, JSON.stringify({ body: "x", text: 1 }) + "\n")
    expect(texts(openCorpus(g, { field: "body" }))).toEqual(["x"])
  })

  test("lines longer than the read chunk are indexed across chunk boundaries", () => {
    const dir = tmp()
    const f = join(dir, "big.jsonl")
    const long = "x".repeat(1_500_000) + "é"
    writeFileSync(f, `${JSON.stringify({ text: "a" })}\n${JSON.stringify({ text: long })}\n${JSON.stringify({ text: "b" })}\n`)
    const c = openCorpus(f)
    expect(c.size).toBe(3)
    expect(c.text(1)).toBe(long)
    expect(c.text(2)).toBe("b")
  })

  test("a line without the text field names file and line", () => {
    const dir = tmp()
    const f = join(dir, "bad.jsonl")
    writeFileSync(f, `${JSON.stringify({ text: "ok" })}\n\n${JSON.stringify({ content: "no text" })}\n`)
    expect(() => openCorpus(f)).toThrow(`${f}:3: text must be a string (was missing)`)
    writeFileSync(f, `${JSON.stringify({ text: 5 })}\n`)
    expect(() => openCorpus(f)).toThrow(`${f}:1: text must be a string (was a number)`)
  })

  test("invalid JSON names file and line", () => {
    const dir = tmp()
    const f = join(dir, "broken.jsonl")
    writeFileSync(f, `${JSON.stringify({ text: "ok" })}\n{"text": "unterminated\n`)
    expect(() => openCorpus(f)).toThrow(InputError)
    expect(() => openCorpus(f)).toThrow(`${f}:2: invalid JSON`)
  })

  test("an empty file and a folder mixing txt and jsonl", () => {
    const dir = tmp()
    writeFileSync(join(dir, "empty.jsonl"), "\n\n")
    expect(() => openCorpus(join(dir, "empty.jsonl"))).toThrow("corpus is empty")
    writeFileSync(join(dir, "a.txt"), "txt doc")
    writeFileSync(join(dir, "b.jsonl"), `${JSON.stringify({ text: "line 1" })}\n${JSON.stringify({ text: "line 2" })}\n`)
    expect(texts(openCorpus(dir))).toEqual(["txt doc", "line 1", "line 2"])
  })
})

test("memory corpus", () => {
  expect(texts(memoryCorpus("m", ["a", "b"]))).toEqual(["a", "b"])
  expect(() => memoryCorpus("m", [])).toThrow("m: corpus is empty")
})
