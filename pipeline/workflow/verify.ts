/**
 * Checking committed entries against their records (store.ts). Two depths:
 * - "stat", on every reuse: each file's size, mtime and inode; a file whose stamp moved is re-hashed
 *   (a copied store keeps its content and gets its new stamps written back), one whose size moved is wrong.
 * - "hash", before a running step reads an input and in `ropeway verify`: every byte re-hashed.
 * Either way a file added to or missing from an output folder is a mismatch, and so is a meta.json whose
 * seal (store.ts) no longer fits it: the records and the output hashes keys were made of are what it claims.
 */
import { existsSync, lstatSync, readdirSync, statSync } from "node:fs"
import { join } from "node:path"
import { fileHash, hashTree } from "../../common/hash.ts"
import { type EntryMeta, type FileRecord, type RunStore, sealOf } from "./store.ts"

export type Depth = "stat" | "hash"

export interface Mismatch {
  /** The file (absolute path) that differs from its record. */
  readonly file: string
  readonly problem: string
}

export interface EntryCheck {
  readonly key: string
  /** Undefined when meta.json is missing or unreadable (a mismatch says which). */
  readonly meta: EntryMeta | undefined
  readonly mismatches: readonly Mismatch[]
  /** Every file's record with the stamps found now, when some were re-hashed and matched; undefined when none moved. */
  readonly restamp: Readonly<Record<string, FileRecord>> | undefined
  readonly files: number
  readonly bytes: number
}

const short = (h: string): string => `${h.slice(0, 12)}…`

/** Files below `path` as hashTree names them ("" for a file itself), dot-files skipped. */
const listFiles = (path: string): string[] => {
  if (!statSync(path).isDirectory()) return [""]
  const out: string[] = []
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith(".")) continue
      const r = rel === "" ? name : `${rel}/${name}`
      if (statSync(join(dir, name)).isDirectory()) walk(join(dir, name), r)
      else out.push(r)
    }
  }
  walk(path, "")
  return out
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

/** Checks `key`'s outputs (all, or those named in `only`) at `depth`. */
export const checkEntry = (store: RunStore, key: string, depth: Depth, only?: readonly string[]): EntryCheck => {
  const metaFile = store.metaPath(key)
  const fail = (problem: string): EntryCheck => ({ key, meta: undefined, mismatches: [{ file: metaFile, problem }], restamp: undefined, files: 0, bytes: 0 })
  let meta: EntryMeta | undefined
  try {
    meta = store.lookup(key)
  } catch (e) {
    return fail(`unreadable (${e instanceof Error ? e.message : String(e)})`)
  }
  if (meta === undefined) return fail("missing")
  if (meta.key !== key || !isRecord(meta.outputs) || (meta.files !== undefined && !isRecord(meta.files))) {
    return fail("not this entry's record (key, outputs or files do not fit)")
  }
  if (meta.files !== undefined && meta.seal !== sealOf(meta)) return fail("edited after the step committed (its seal does not match)")
  const mismatches: Mismatch[] = []
  const now: Record<string, FileRecord> = { ...meta.files }
  let moved = false
  let files = 0
  let bytes = 0
  for (const name of only ?? Object.keys(meta.outputs)) {
    const out = store.outputPath(key, name)
    const recorded = meta.outputs[name]
    if (recorded === undefined) {
      mismatches.push({ file: metaFile, problem: `no output "${name}" recorded` })
      continue
    }
    if (!existsSync(out)) {
      mismatches.push({ file: out, problem: "missing" })
      continue
    }
    const fullPath = (rel: string) => (rel === "" ? out : join(out, rel))
    const recordKey = (rel: string) => (rel === "" ? name : `${name}/${rel}`)
    if (meta.files === undefined) {
      // an entry from before file records: only the output's hash to go by
      const tree = hashTree(out)
      if (tree.hash !== recorded.hash) mismatches.push({ file: out, problem: `content changed (${short(tree.hash)}, recorded ${short(recorded.hash)})` })
      for (const f of tree.files) {
        now[recordKey(f.rel)] = { size: f.size, mtimeMs: f.mtimeMs, ino: f.ino, sha256: f.sha256 }
        files++
        bytes += f.size
      }
      moved ||= only === undefined // records for every output, or none
      continue
    }
    const expected = Object.keys(meta.files).filter((k) => k === name || k.startsWith(`${name}/`))
    const present = listFiles(out)
    const found = new Set(present.map(recordKey))
    for (const k of expected) if (!found.has(k)) mismatches.push({ file: join(store.entryDir(key), "out", k), problem: `missing (recorded ${meta.files[k]!.size} bytes)` })
    for (const k of found) if (meta.files[k] === undefined) mismatches.push({ file: join(store.entryDir(key), "out", k), problem: "not in the store's record (added after the step committed)" })
    for (const rel of present) {
      const rec = meta.files[recordKey(rel)]
      if (rec === undefined) continue
      const path = fullPath(rel)
      const st = lstatSync(path)
      files++
      bytes += st.size
      if (st.size !== rec.size) {
        mismatches.push({ file: path, problem: `size ${st.size} bytes, recorded ${rec.size}` })
        continue
      }
      const sameStamp = st.mtimeMs === rec.mtimeMs && st.ino === rec.ino
      if (depth === "stat" && sameStamp) continue
      const h = fileHash(path)
      if (h !== rec.sha256) mismatches.push({ file: path, problem: `content changed (sha256 ${short(h)}, recorded ${short(rec.sha256)})` })
      else if (!sameStamp) {
        now[recordKey(rel)] = { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, sha256: h }
        moved = true
      }
    }
  }
  return { key, meta, mismatches, restamp: moved && mismatches.length === 0 ? now : undefined, files, bytes }
}

/** One line for a failed check: the first file and its problem, and how many more. */
export const describeMismatches = (ms: readonly Mismatch[]): string =>
  `${ms[0]!.file}: ${ms[0]!.problem}${ms.length > 1 ? ` (and ${ms.length - 1} more file${ms.length > 2 ? "s" : ""})` : ""}`

export interface StoreVerification {
  readonly entries: number
  readonly files: number
  readonly bytes: number
  readonly bad: readonly EntryCheck[]
}

/** Re-hashes every committed entry; `onEntry` sees each result as it comes (for progress). */
export const verifyStore = (store: RunStore, onEntry: (c: EntryCheck) => void = () => {}): StoreVerification => {
  const bad: EntryCheck[] = []
  let files = 0
  let bytes = 0
  const keys = store.keys()
  for (const key of keys) {
    const c = checkEntry(store, key, "hash")
    files += c.files
    bytes += c.bytes
    if (c.mismatches.length > 0) bad.push(c)
    onEntry(c)
  }
  return { entries: keys.length, files, bytes, bad }
}
