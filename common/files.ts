/**
 * Files written whole or not at all: a crash mid-write leaves the old file (or none), never half a new one.
 * A failure (a full disk, no permission) is a WriteError naming the file meant, not a temporary sibling.
 */
import { closeSync, copyFileSync, fsyncSync, linkSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs"
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

/**
 * A file written piece by piece through a temporary sibling and a rename (a model file larger than memory,
 * one tensor at a time): `write` hands each piece to `put`. A file-system failure is a WriteError naming
 * `path`; what `write` itself throws (a tensor that cannot be made) passes through as it is.
 */
export function writeStreamAtomic(path: string, write: (put: (bytes: Uint8Array) => void) => void): void {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`
  let fd: number | undefined
  const io = <A>(f: () => A): A => {
    try {
      return f()
    } catch (e) {
      throw writeError(path, e)
    }
  }
  try {
    io(() => mkdirSync(dirname(path), { recursive: true }))
    fd = io(() => openSync(tmp, "w"))
    const out = fd
    write((bytes) => io(() => {
      let done = 0
      while (done < bytes.length) done += writeSync(out, bytes, done, bytes.length - done)
    }))
    io(() => closeSync(out))
    fd = undefined
    io(() => renameSync(tmp, path))
  } catch (e) {
    if (fd !== undefined) closeSync(fd)
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
