/**
 * Files written whole or not at all: a crash mid-write leaves the old file (or none), never half a new one.
 * A failure (a full disk, no permission) is a WriteError naming the file meant, not a temporary sibling.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs"
import { dirname } from "node:path"
import { writeError } from "./errors.ts"

const writeBytes = (path: string, bytes: Uint8Array | string, sync: boolean): void => {
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

/** Writes every byte to `path` (created or truncated); with `sync`, flushed to the disk before returning. */
export function writeAll(path: string, bytes: Uint8Array | string, sync = false): void {
  try {
    writeBytes(path, bytes, sync)
  } catch (e) {
    throw writeError(path, e)
  }
}

/** Writes through a temporary sibling and a rename, so readers never see a half-written file. */
export function writeFileAtomic(path: string, bytes: Uint8Array | string): void {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`
  try {
    mkdirSync(dirname(path), { recursive: true })
    writeBytes(tmp, bytes, false)
    renameSync(tmp, path)
  } catch (e) {
    rmSync(tmp, { force: true })
    throw writeError(path, e)
  }
}

/** `value` as compact JSON, atomically (checkpoints of intermediate results). */
export const writeJsonAtomic = (path: string, value: unknown): void => writeFileAtomic(path, JSON.stringify(value))
