/**
 * The run store: a folder (`runs/` by default).
 *   _store/<key>/meta.json, _store/<key>/out/<output>   committed step artifacts, addressed by cache key; read-only
 *   _tmp/<key>.<pid>.<n>/                               a running step's outputs, renamed into _store on success
 *   _checkpoints/<key>/                                 a step's inner progress, kept until the step commits
 *   _locks/<key>                                        the process running that step now (lock.ts)
 *   _quarantine/<key>.<time>/                           entries set aside because a file no longer matched its record
 *   _hashes.json                                        content hashes of external inputs by (path, size, mtime)
 *   <workflow name>/<timestamp>/manifest.json           one folder per run; steps/<step> links to its outputs
 *
 * A committed entry cannot change under the runs that use it: its files and folders lose their write
 * bits, and meta.json records every file's size, mtime, inode and SHA-256 under a seal, which verify.ts
 * checks (cheaply on every reuse, fully before a running step reads it, everything in `ropeway verify`).
 */
import { chmodSync, constants, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { writeError } from "../../common/errors.ts"
import { writeFileAtomic } from "../../common/files.ts"
import { canonicalJson, hashPath, hashTree, sha256 } from "../../common/hash.ts"
import { acquire, type Holder, isAlive, release } from "./lock.ts"
import type { ArtifactKind, Json } from "./stage.ts"

export interface OutputRecord {
  readonly kind: string
  readonly hash: string
}

/** What a committed file was: verify.ts compares the file on disk with it. */
export interface FileRecord {
  readonly size: number
  readonly mtimeMs: number
  readonly ino: number
  readonly sha256: string
}

/** `_store/<key>/meta.json`: what made the entry and what it holds. */
export interface EntryMeta {
  readonly key: string
  readonly stage: string
  readonly version: string
  readonly step: string
  readonly params: unknown
  readonly seed: number
  readonly inputs: Readonly<Record<string, string>>
  readonly outputs: Readonly<Record<string, OutputRecord>>
  /** Every file under out/, by its path there ("model/config.json"; a file output by its name). Absent in entries older than records. */
  readonly files?: Readonly<Record<string, FileRecord>>
  /** sealOf(this entry), written with `files`: an edit to meta.json itself shows. */
  readonly seal?: string
  readonly result: Json | null
  readonly seconds: number
  readonly createdAt: string
}

export interface KeyParts {
  readonly stage: string
  readonly version: string
  readonly params: unknown
  readonly seed: number
  /** Input name -> content hash. */
  readonly inputs: Readonly<Record<string, string>>
}

/** hash(stage name + version, canonical params JSON, seed, input artifacts' content hashes). */
export const cacheKey = (p: KeyParts): string =>
  sha256(canonicalJson({ format: 1, stage: p.stage, version: p.version, params: p.params, seed: p.seed, inputs: p.inputs })).slice(0, 32)

/** SHA-256 of everything an entry claims except the files' stamps (which a copied store changes). */
export const sealOf = (meta: EntryMeta): string =>
  sha256(canonicalJson({
    ...meta,
    seal: undefined,
    files: meta.files === undefined ? undefined : Object.fromEntries(Object.entries(meta.files).map(([k, f]) => [k, { size: f.size, sha256: f.sha256 }])),
  }))

const WRITE_BITS = 0o222

/** Removes a file or folder, read-only folders included (their write bits come back first; files keep theirs, they may be shared links). */
export const removeTree = (path: string): void => {
  const open = (p: string): void => {
    const st = lstatSync(p, { throwIfNoEntry: false })
    if (st === undefined || !st.isDirectory()) return
    if ((st.mode & 0o200) === 0) chmodSync(p, st.mode | 0o700)
    for (const name of readdirSync(p)) open(join(p, name))
  }
  open(path)
  rmSync(path, { recursive: true, force: true })
}

/**
 * Makes `path` (a file or folder) read-only: every file and folder loses its write bits. A file that is
 * also linked from elsewhere and still writable (a link into a user's model folder) is copied first, so
 * neither the user's file changes mode nor an edit to it reaches the store.
 */
const makeReadOnly = (path: string): void => {
  const st = lstatSync(path)
  if (st.isSymbolicLink()) return
  if (st.isDirectory()) {
    for (const name of readdirSync(path)) makeReadOnly(join(path, name))
  } else if (st.nlink > 1 && (st.mode & WRITE_BITS) !== 0) {
    const copy = `${path}.${process.pid}.copy`
    copyFileSync(path, copy, constants.COPYFILE_FICLONE) // a reflink where the file system has them
    renameSync(copy, path)
  }
  const mode = statSync(path).mode
  if ((mode & WRITE_BITS) !== 0) chmodSync(path, mode & 0o7777 & ~WRITE_BITS)
}

let tmpCounter = 0

export class RunStore {
  readonly root: string
  constructor(root = "runs") {
    this.root = resolve(root)
  }

  entryDir(key: string): string {
    return join(this.root, "_store", key)
  }
  metaPath(key: string): string {
    return join(this.entryDir(key), "meta.json")
  }
  outputPath(key: string, output: string): string {
    return join(this.entryDir(key), "out", output)
  }
  checkpointDir(key: string): string {
    return join(this.root, "_checkpoints", key)
  }
  lockPath(key: string): string {
    return join(this.root, "_locks", key)
  }

  /** Keys of every committed entry. */
  keys(): string[] {
    const dir = join(this.root, "_store")
    return existsSync(dir) ? readdirSync(dir).filter((n) => !n.startsWith(".")).sort() : []
  }

  /** The committed entry for `key`, if any (unchecked: verify.ts checks it). Throws when meta.json is unreadable. */
  lookup(key: string): EntryMeta | undefined {
    const meta = this.metaPath(key)
    if (!existsSync(meta)) return undefined
    return JSON.parse(readFileSync(meta, "utf8")) as EntryMeta
  }

  /** A fresh temporary folder for a step's outputs (with `out/` inside). */
  makeTemp(key: string): string {
    const dir = join(this.root, "_tmp", `${key}.${process.pid}.${tmpCounter++}`)
    mkdirSync(join(dir, "out"), { recursive: true })
    return dir
  }

  /**
   * Makes a finished temp folder's outputs read-only and records them: each output's content hash and
   * each file's size, mtime, inode and hash, from one read.
   */
  seal(tmp: string, outputs: Readonly<Record<string, ArtifactKind>>): { outputs: Record<string, OutputRecord>; files: Record<string, FileRecord> } {
    const records: Record<string, OutputRecord> = {}
    const files: Record<string, FileRecord> = {}
    for (const [name, kind] of Object.entries(outputs)) {
      const path = join(tmp, "out", name)
      makeReadOnly(path)
      const tree = hashTree(path)
      records[name] = { kind, hash: tree.hash }
      for (const f of tree.files) files[f.rel === "" ? name : `${name}/${f.rel}`] = { size: f.size, mtimeMs: f.mtimeMs, ino: f.ino, sha256: f.sha256 }
    }
    chmodSync(join(tmp, "out"), 0o555)
    return { outputs: records, files }
  }

  /**
   * Moves a sealed temp folder into place. If another process committed the same key meanwhile, its
   * entry wins (same inputs, same key) and ours is dropped.
   */
  commit(tmp: string, unsealed: EntryMeta): EntryMeta {
    const meta: EntryMeta = { ...unsealed, seal: sealOf(unsealed) }
    const metaFile = join(tmp, "meta.json")
    writeFileAtomic(metaFile, `${JSON.stringify(meta, null, 2)}\n`)
    chmodSync(metaFile, 0o444)
    mkdirSync(join(this.root, "_store"), { recursive: true })
    try {
      renameSync(tmp, this.entryDir(meta.key))
    } catch (e) {
      let existing: EntryMeta | undefined
      try {
        existing = this.lookup(meta.key)
      } catch {
        existing = undefined
      }
      removeTree(tmp)
      if (existing === undefined) throw writeError(this.entryDir(meta.key), e)
      return existing
    }
    removeTree(this.checkpointDir(meta.key))
    return meta
  }

  /**
   * Rewrites a committed entry's file records after they were checked (same content, new mtime or inode:
   * a copied store; or an entry from before records, checked by its output hashes).
   */
  restamp(meta: EntryMeta, files: Readonly<Record<string, FileRecord>>): EntryMeta {
    const next: EntryMeta = { ...meta, files, seal: sealOf({ ...meta, files }) }
    const path = this.metaPath(meta.key)
    writeFileAtomic(path, `${JSON.stringify(next, null, 2)}\n`)
    chmodSync(path, 0o444)
    return next
  }

  /** Moves an entry aside (it no longer matches its record); returns where it went. */
  quarantine(key: string): string {
    const dir = join(this.root, "_quarantine")
    mkdirSync(dir, { recursive: true })
    const dest = join(dir, `${key}.${new Date().toISOString().replace(/[-:.]/g, "")}.${process.pid}`)
    renameSync(this.entryDir(key), dest)
    return dest
  }

  /**
   * Claims `key` for this process, so two runs sharing a step don't compute it at once. Returns the
   * holder when another live process has it; a dead holder's claim is taken over.
   */
  lock(key: string): Holder | undefined {
    mkdirSync(join(this.root, "_locks"), { recursive: true })
    return acquire(this.lockPath(key))
  }

  unlock(key: string): void {
    release(this.lockPath(key))
  }

  /** Removes temp folders left by processes that are gone (a SIGKILLed run). */
  sweepTemp(): void {
    const dir = join(this.root, "_tmp")
    if (!existsSync(dir)) return
    for (const name of readdirSync(dir)) {
      const pid = Number(name.split(".")[1])
      if (!Number.isInteger(pid) || (pid !== process.pid && !isAlive({ pid, start: null }))) removeTree(join(dir, name))
    }
  }

  /**
   * Content hash of an external input (a model folder), remembered by path, size and mtime; `fresh`
   * re-reads the files whatever the remembered stamp says (before a step that runs uses them).
   */
  hashExternal(path: string, fresh = false): string {
    const abs = resolve(path)
    const stamp = (p: string): string => {
      const st = statSync(p)
      if (!st.isDirectory()) return `${st.size}:${st.mtimeMs}`
      return readdirSync(p).sort().map((n) => `${n}=${stamp(join(p, n))}`).join(",")
    }
    const id = sha256(`${abs}\0${stamp(abs)}`)
    const cacheFile = join(this.root, "_hashes.json")
    let cache: Record<string, string> = {}
    try {
      cache = JSON.parse(readFileSync(cacheFile, "utf8")) as Record<string, string>
    } catch {
      // no cache yet
    }
    const hit = cache[id]
    if (hit !== undefined && !fresh) return hit
    const h = hashPath(abs)
    if (h !== hit) {
      mkdirSync(dirname(cacheFile), { recursive: true })
      writeFileAtomic(cacheFile, JSON.stringify({ ...cache, [id]: h }))
    }
    return h
  }
}
