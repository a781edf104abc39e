/** Files written whole or not at all: a crash mid-write leaves the old file (or none), never half a new one. */
import { closeSync, copyFileSync, fsyncSync, linkSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs"
import { dirname } from "node:path"

/** Writes every byte to `path` (created or truncated); with `sync`, flushed to the disk before returning. */
export function writeAll(path: string, bytes: Uint8Array | string, sync = false): void {
  const buf = typeof bytes === "string" ? Buffer.from(bytes, "utf8") : bytes
  const fd = openSync(path, "w")
  try {
    let done = 0
    while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done)
    if (sync) fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Writes through a temporary sibling and a rename, so readers never see a half-written file. */
export function writeFileAtomic(path: string, bytes: Uint8Array | string): void {
  mkdirSync(dirname(path), { recursive: true })
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`
  try {
    writeAll(tmp, bytes)
    renameSync(tmp, path)
  } catch (e) {
    rmSync(tmp, { force: true })
    throw e
  }
}

/** `value` as compact JSON, atomically (checkpoints of intermediate results). */
export const writeJsonAtomic = (path: string, value: unknown): void => writeFileAtomic(path, JSON.stringify(value))

/** A hard link of `from` at `to` (free, whatever the size), or a copy where links fail (another file system). */
export function linkOrCopy(from: string, to: string): void {
  rmSync(to, { force: true })
  try {
    linkSync(from, to)
  } catch {
    copyFileSync(from, to)
  }
}
