/** Content hashes and canonical JSON: what cache keys and the manifest are made of. */
import { createHash } from "node:crypto"
import { closeSync, openSync, readdirSync, readSync, statSync } from "node:fs"
import { join } from "node:path"

/** JSON with object keys sorted at every level, so equal values always give equal text. */
export const canonicalJson = (value: unknown): string =>
  JSON.stringify(value, (_k, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  )

export const sha256 = (data: string | Uint8Array): string => createHash("sha256").update(data).digest("hex")

/** SHA-256 (hex) of a file's bytes, read in 4 MiB pieces. */
export const fileHash = (path: string): string => {
  const h = createHash("sha256")
  const fd = openSync(path, "r")
  try {
    const buf = Buffer.allocUnsafe(1 << 22)
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      h.update(buf.subarray(0, n))
    }
  } finally {
    closeSync(fd)
  }
  return h.digest("hex")
}

/** One file of a hashed tree: its path below the root ("" for the root file itself) and what identifies it. */
export interface HashedFile {
  readonly rel: string
  readonly size: number
  readonly mtimeMs: number
  readonly ino: number
  readonly sha256: string
}

/**
 * The content hash of a file, or of a folder (its sorted relative paths and their files' hashes), so
 * the same bytes hash the same wherever they live, plus each file's size, mtime, inode and hash from
 * the same read. Dot-files are skipped (editor and OS litter).
 */
export const hashTree = (path: string): { readonly hash: string; readonly files: readonly HashedFile[] } => {
  const record = (abs: string, rel: string): HashedFile => {
    const st = statSync(abs)
    return { rel, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, sha256: fileHash(abs) }
  }
  if (!statSync(path).isDirectory()) {
    const f = record(path, "")
    return { hash: `sha256:${f.sha256}`, files: [f] }
  }
  const h = createHash("sha256")
  const files: HashedFile[] = []
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith(".")) continue
      const abs = join(dir, name)
      const r = rel === "" ? name : `${rel}/${name}`
      if (statSync(abs).isDirectory()) walk(abs, r)
      else {
        const f = record(abs, r)
        files.push(f)
        h.update(`${r}\0${f.sha256}\n`)
      }
    }
  }
  walk(path, "")
  return { hash: `sha256-tree:${h.digest("hex")}`, files }
}

export const hashPath = (path: string): string => hashTree(path).hash
