/**
 * Hands the C heap's free pages back to the system (glibc's `malloc_trim`).
 *
 * The first compile of an unrolled llvmpipe kernel on a machine makes LLVM allocate up to ~1.7 GiB, which
 * glibc keeps in its heap once freed; only an explicit trim returns it. kernels/attention.ts
 * prepareAttention trims after compiling, and models call it before loading weights, so the compile's
 * memory and the weights are never resident together. Linux with glibc only, through the runtime's FFI (Bun's `bun:ffi`,
 * `Deno.dlopen`); elsewhere, or where FFI is not allowed, it does nothing and says so by returning false.
 */
import { existsSync } from "node:fs"
import { join } from "node:path"
import { SYSTEM_LIBRARY_DIRS } from "./device.ts"

type Trim = (pad: number) => number

const LIBC = "libc.so.6"

const libcPath = (): string | undefined => SYSTEM_LIBRARY_DIRS.map((d) => join(d, LIBC)).find((p) => existsSync(p))

let trim: Trim | null | undefined

async function openTrim(): Promise<Trim | null> {
  if (process.platform !== "linux") return null
  try {
    const deno = (globalThis as { Deno?: { dlopen(path: string, symbols: object): { symbols: { malloc_trim(pad: number): number } } } }).Deno
    if (deno !== undefined) {
      // by its path: Deno's --allow-ffi names the folders a library may come from
      const path = libcPath()
      if (path === undefined) return null
      const lib = deno.dlopen(path, { malloc_trim: { parameters: ["usize"], result: "i32" } })
      return (pad) => lib.symbols.malloc_trim(pad)
    }
    if ((globalThis as { Bun?: unknown }).Bun === undefined) return null
    const { dlopen } = await import("bun:ffi")
    const lib = dlopen(LIBC, { malloc_trim: { args: ["u64"], returns: "i32" } })
    return (pad) => lib.symbols.malloc_trim(pad)
  } catch {
    return null // not glibc (musl has no malloc_trim), or FFI not permitted
  }
}

/** Returns the heap's free pages to the system; false where that cannot be done here. */
export async function releaseFreedHostMemory(): Promise<boolean> {
  trim ??= await openTrim()
  if (trim === null) return false
  trim(0)
  return true
}
