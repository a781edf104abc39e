// Preloaded by bunfig.toml: one Dawn device shared by every test file, destroyed after the last.
import { afterAll } from "bun:test"
import { acquireRuntime } from "../kernels/device.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"

// Kernels run their default variants (no timed probes, no tuning cache); tests that cover variants force them.
process.env.ROPEWAY_TUNING ??= "off"

let runtime: Promise<GpuRuntime> | undefined

/** The shared runtime, acquired on first use. */
export const gpu = (): Promise<GpuRuntime> => (runtime ??= acquireRuntime())

afterAll(async () => {
  if (runtime !== undefined) (await runtime).destroy()
  runtime = undefined
})
