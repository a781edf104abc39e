/**
 * Text corpora: plain-text folders (every *.txt is one document) and JSONL files (one document per line,
 * text in a configurable field). Opening lists the documents and, for JSONL, indexes and validates every
 * line once; the text itself is read on demand, so a corpus never has to fit in memory.
 *
 * Document order is part of reproducibility: files are sorted by path with a plain code-unit comparison
 * (not locale-aware), lines keep their file order, so indices mean the same thing on every machine.
 */
import { closeSync, openSync, readFileSync, readSync, readdirSync, statSync } from "node:fs"
import { join, relative } from "node:path"
import { type } from "arktype"
import { inputError } from "../../common/errors.ts"
import { checkJson } from "../../common/validate.ts"

export interface Corpus {
  /** The folder or file it was opened from. */
  readonly path: string
  readonly size: number
  /** Text of document i, 0 ≤ i < size. */
  text(i: number): string
  /** Where document i comes from (`file` or `file:line`), for errors and logs. */
  where(i: number): string
}

export interface CorpusOptions {
  /** JSONL field holding the text; default "text". */
  readonly field?: string
}

/** One document's location: a whole .txt file, or a byte range (one line) of a .jsonl file. */
type Entry =
  | { readonly kind: "txt"; readonly file: string }
  | { readonly kind: "jsonl"; readonly file: string; readonly line: number; readonly start: number; readonly length: number }

const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

/** Every file under `dir` (recursively) whose name ends with one of `exts`, sorted by relative path. */
const listFiles = (dir: string, exts: readonly string[]): string[] => {
  const out: string[] = []
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.isFile() && exts.some((x) => e.name.endsWith(x))) out.push(p)
    }
  }
  walk(dir)
  return out.sort((a, b) => byCodeUnit(relative(dir, a), relative(dir, b)))
}

const CHUNK = 1 << 20
const decoder = new TextDecoder("utf-8")

/** Reads a JSONL file in chunks, validating each non-blank line; returns one entry per document. */
const indexJsonl = (file: string, field: string): Entry[] => {
  const entries: Entry[] = []
  const fd = openSync(file, "r")
  try {
    const chunk = Buffer.alloc(CHUNK)
    let carry: Buffer = Buffer.alloc(0) // bytes of the current, unfinished line
    let carryStart = 0 // file offset of carry[0]
    let fileOffset = 0
    let lineNo = 0
    // each line: a JSON object whose text is a string under `field` (other fields are the corpus' own metadata)
    const line = type({ [field]: "string" })
    const finishLine = (bytes: Buffer, start: number): void => {
      lineNo++
      let len = bytes.length
      if (len > 0 && bytes[len - 1] === 13) len-- // CRLF
      const text = decoder.decode(bytes.subarray(0, len))
      if (text.trim() === "") return
      const where = `${file}:${lineNo}`
      let value: unknown
      try {
        value = JSON.parse(text)
      } catch (e) {
        throw inputError(where, `invalid JSON (${(e as Error).message})`)
      }
      checkJson(line, value, where)
      entries.push({ kind: "jsonl", file, line: lineNo, start, length: len })
    }
    for (;;) {
      const n = readSync(fd, chunk, 0, CHUNK, fileOffset)
      if (n === 0) break
      const data = chunk.subarray(0, n)
      let pos = 0
      for (;;) {
        const nl = data.indexOf(10, pos)
        if (nl < 0) break
        const piece = data.subarray(pos, nl)
        if (carry.length > 0) {
          finishLine(Buffer.concat([carry, piece]), carryStart)
          carry = Buffer.alloc(0)
        } else finishLine(piece, fileOffset + pos)
        pos = nl + 1
      }
      if (pos < n) {
        if (carry.length === 0) carryStart = fileOffset + pos
        carry = Buffer.concat([carry, data.subarray(pos)])
      }
      fileOffset += n
    }
    if (carry.length > 0) finishLine(carry, carryStart)
  } finally {
    closeSync(fd)
  }
  return entries
}

const readRange = (file: string, start: number, length: number): string => {
  const buf = Buffer.alloc(length)
  const fd = openSync(file, "r")
  try {
    let done = 0
    while (done < length) {
      const n = readSync(fd, buf, done, length - done, start + done)
      if (n === 0) throw inputError(file, "changed while being read (file shorter than when it was indexed)")
      done += n
    }
  } finally {
    closeSync(fd)
  }
  return decoder.decode(buf)
}

/**
 * Opens a corpus: a folder (every *.txt is one document, every *.jsonl contributes one per line, all
 * sorted by path) or a single .jsonl / .txt file. An empty corpus is an error naming the path.
 */
export const openCorpus = (path: string, options: CorpusOptions = {}): Corpus => {
  const field = options.field ?? "text"
  let stat
  try {
    stat = statSync(path)
  } catch {
    throw inputError(path, "corpus not found")
  }
  const files = stat.isDirectory() ? listFiles(path, [".txt", ".jsonl"]) : [path]
  const entries: Entry[] = []
  for (const f of files) {
    if (f.endsWith(".jsonl")) entries.push(...indexJsonl(f, field))
    else entries.push({ kind: "txt", file: f })
  }
  if (entries.length === 0)
    throw inputError(path, stat.isDirectory() ? "corpus is empty: no documents in any *.txt or *.jsonl file" : "corpus is empty: no documents")

  const entry = (i: number): Entry => {
    const e = entries[i]
    if (e === undefined) throw new RangeError(`document ${i} out of range (corpus ${path} has ${entries.length})`)
    return e
  }
  return {
    path,
    size: entries.length,
    where: (i) => {
      const e = entry(i)
      return e.kind === "txt" ? e.file : `${e.file}:${e.line}`
    },
    text: (i) => {
      const e = entry(i)
      if (e.kind === "txt") return readFileSync(e.file, "utf8")
      const value = JSON.parse(readRange(e.file, e.start, e.length)) as Record<string, unknown>
      return value[field] as string
    },
  }
}

/** An in-memory corpus (tests, synthetic data, small eval sets). */
export const memoryCorpus = (name: string, texts: readonly string[]): Corpus => {
  if (texts.length === 0) throw inputError(name, "corpus is empty: no documents")
  return {
    path: name,
    size: texts.length,
    where: (i) => `${name}#${i}`,
    text: (i) => {
      const t = texts[i]
      if (t === undefined) throw new RangeError(`document ${i} out of range (corpus ${name} has ${texts.length})`)
      return t
    },
  }
}
