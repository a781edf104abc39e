/**
 * The run store: a folder (`runs/` by default).
 *   _store/<key>/meta.json, _store/<key>/out/<output>   committed step artifacts, addressed by cache key
 *   _tmp/<key>.<pid>.<n>/                               a running step's outputs, renamed into _store on success
 *   _checkpoints/<key>/                                 a step's inner progress, kept until the step commits
 *   _locks/<key>                                        the pid running that step now
 *   _hashes.json                                        content hashes of external inputs by (path, size, mtime)
 *   <workflow name>/<timestamp>/manifest.json           one folder per run; steps/<step> links to its outputs
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { writeFileAtomic } from "../../common/files.ts"
import { canonicalJson, hashPath, sha256 } from "../../common/hash.ts"
import type { Json } from "./stage.ts"

export interface OutputRecord {
  readonly kind: string
  readonly hash: string
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

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
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
  outputPath(key: string, output: string): string {
    return join(this.entryDir(key), "out", output)
  }
  checkpointDir(key: string): string {
    return join(this.root, "_checkpoints", key)
  }

  /** The committed entry for `key`, if any. */
  lookup(key: string): EntryMeta | undefined {
    const meta = join(this.entryDir(key), "meta.json")
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
   * Moves a finished temp folder into place. If another process committed the same key meanwhile, its
   * entry wins (same inputs, same key) and ours is dropped.
   */
  commit(tmp: string, meta: EntryMeta): EntryMeta {
    writeFileSync(join(tmp, "meta.json"), `${JSON.stringify(meta, null, 2)}\n`)
    mkdirSync(join(this.root, "_store"), { recursive: true })
    try {
      renameSync(tmp, this.entryDir(meta.key))
    } catch (e) {
      const existing = this.lookup(meta.key)
      rmSync(tmp, { recursive: true, force: true })
      if (existing === undefined) throw e
      return existing
    }
    rmSync(this.checkpointDir(meta.key), { recursive: true, force: true })
    return meta
  }

  /**
   * Claims `key` for this process, so two runs sharing a step don't write one checkpoint folder at
   * once. Returns the holder's pid when another live process has it; a dead holder's claim is taken over.
   */
  lock(key: string): number | undefined {
    const dir = join(this.root, "_locks")
    mkdirSync(dir, { recursive: true })
    const file = join(dir, key)
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(file, `${process.pid}`, { flag: "wx" })
        return undefined
      } catch {
        const holder = Number(readFileSync(file, "utf8"))
        if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) return holder
        rmSync(file, { force: true })
      }
    }
    return undefined
  }

  unlock(key: string): void {
    const file = join(this.root, "_locks", key)
    try {
      if (Number(readFileSync(file, "utf8")) === process.pid) rmSync(file, { force: true })
    } catch {
      // already gone
    }
  }

  /** Removes temp folders left by processes that are gone (a SIGKILLed run). */
  sweepTemp(): void {
    const dir = join(this.root, "_tmp")
    if (!existsSync(dir)) return
    for (const name of readdirSync(dir)) {
      const pid = Number(name.split(".")[1])
      if (!Number.isInteger(pid) || (pid !== process.pid && !alive(pid))) rmSync(join(dir, name), { recursive: true, force: true })
    }
  }

  /** Content hash of an external input (a model folder), remembered by path, size and mtime. */
  hashExternal(path: string): string {
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
    if (hit !== undefined) return hit
    const h = hashPath(abs)
    mkdirSync(this.root, { recursive: true })
    writeFileAtomic(cacheFile, JSON.stringify({ ...cache, [id]: h }))
    return h
  }
}
