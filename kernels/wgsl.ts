/**
 * WGSL sources live next to their wrapper (`name.wgsl` beside `name.ts`) and are read from there at import:
 * `const src = wgsl("./name.wgsl", import.meta.url)`. A plain file read works the same under every runtime
 * (text imports do not), and costs about as much (measured with all kernels' imports, see README).
 */
import { readFileSync } from "node:fs"

export const wgsl = (file: string, base: string): string => readFileSync(new URL(file, base), "utf8")
