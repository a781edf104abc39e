/**
 * Which adapter and kernel variants are fastest on this machine: in one process, every software adapter
 * present (OpenGL ES llvmpipe, Vulkan lavapipe) with each kernel profile, on matmul (`linear`) and on
 * scoring the scoring bench's model at 2048 tokens. Each figure is a ratio against OpenGL ES with the cpu
 * kernels (the baseline), measured in the same run. kernels/device.ts's SOFTWARE_PREFERENCE follows it.
 */
import { acquireRuntime, describeAdapter, type RuntimeOptions } from "../kernels/device.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { loadLlama } from "../plugins/models/llama/model.ts"
import { writeRandomLlama } from "../plugins/models/llama/random.ts"
import { bestOf, report } from "./harness.ts"
import { measureLinear } from "./matmul.ts"
import { MODEL, tokensOf } from "./scoring.ts"

const SETUPS: readonly (RuntimeOptions & { readonly label: string })[] = [
  { label: "opengles cpu", backend: "opengles", kernels: "cpu" },
  { label: "vulkan cpu", backend: "vulkan", kernels: "cpu" },
  { label: "vulkan gpu", backend: "vulkan", kernels: "gpu" },
]

const SHAPES: readonly (readonly [string, number, number, number])[] = [
  ["1024³", 1024, 1024, 1024],
  ["x[2048,256]·W[768,256]ᵀ", 2048, 768, 256],
]

async function figures(rt: GpuRuntime, modelDir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  for (const [name, m, n, k] of SHAPES) out.set(`linear ${name}`, (await measureLinear(rt, m, n, k, {})).gflops)
  const model = await loadLlama(rt, modelDir)
  const tokens = tokensOf(2048)
  await model.logprobs(tokens) // compiles every kernel this length uses
  out.set("scoring 2048 tokens", tokens.length / ((await bestOf(() => model.logprobs(tokens), 0, 2)) / 1000))
  model.dispose()
  return out
}

export async function run(_rt: GpuRuntime): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ropeway-bench-adapters-"))
  try {
    writeRandomLlama(dir, MODEL)
    let baseline: Map<string, number> | undefined
    for (const { label, ...options } of SETUPS) {
      let rt: GpuRuntime
      try {
        rt = await acquireRuntime(options)
      } catch (e) {
        report({ bench: "adapters", case: label, value: 0, unit: "-", note: `not available: ${String(e).split("\n")[0]}` })
        continue
      }
      try {
        const got = await figures(rt, dir)
        baseline ??= got
        for (const [name, value] of got) {
          const base = baseline.get(name)!
          const unit = name.startsWith("scoring") ? "tok/s" : "GFLOP/s"
          report({ bench: "adapters", case: `${label}: ${name}`, value, unit, baseline: base, ratio: value / base, note: `${describeAdapter(rt.adapter)}; baseline ${SETUPS[0]!.label}` })
        }
      } finally {
        rt.destroy()
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
