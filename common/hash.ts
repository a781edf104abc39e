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

const fileHash = (path: string): string => {
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

/**
 * The content hash of a file, or of a folder (its sorted relative paths and their files' hashes), so
 * the same bytes hash the same wherever they live. Dot-files are skipped (editor and OS litter).
 */
export const hashPath = (path: string): string => {
  if (!statSync(path).isDirectory()) return `sha256:${fileHash(path)}`
  const h = createHash("sha256")
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith(".")) continue
      const abs = join(dir, name)
      const r = rel === "" ? name : `${rel}/${name}`
      if (statSync(abs).isDirectory()) walk(abs, r)
      else h.update(`${r}\0${fileHash(abs)}\n`)
    }
  }
  walk(path, "")
  return `sha256-tree:${h.digest("hex")}`
}
