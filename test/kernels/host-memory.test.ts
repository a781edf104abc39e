import { describe, expect, test } from "bun:test"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { SYSTEM_LIBRARY_DIRS } from "../../kernels/device.ts"
import { releaseFreedHostMemory } from "../../kernels/host-memory.ts"

// glibc's libc where the loader looks (Debian's, on this project's machines)
const hasGlibc = process.platform === "linux" && SYSTEM_LIBRARY_DIRS.some((d) => existsSync(join(d, "libc.so.6")))

describe("host memory", () => {
  test("the heap's free pages go back to the system where there is glibc (this runtime's FFI, Deno's permissions included)", async () => {
    expect(await releaseFreedHostMemory()).toBe(hasGlibc)
    expect(await releaseFreedHostMemory()).toBe(hasGlibc) // the library is opened once
  })
})
