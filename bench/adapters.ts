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
import { defaultLinearVariant } from "../kernels/testing/cases/matmul.ts"
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

interface Setup {
  readonly label: string
  readonly rt: GpuRuntime
  readonly model: Awaited<ReturnType<typeof loadLlama>>
}

/** Rounds of every figure on every setup in turn, so that load from other processes falls on all alike; best kept. */
const ROUNDS = 3

export async function run(_rt: GpuRuntime): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ropeway-bench-adapters-"))
  const setups: Setup[] = []
  try {
    writeRandomLlama(dir, MODEL)
    for (const { label, ...options } of SETUPS) {
      try {
        const rt = await acquireRuntime(options)
        setups.push({ label, rt, model: await loadLlama(rt, dir) })
      } catch (e) {
        report({ bench: "adapters", case: label, value: 0, unit: "-", note: `not available: ${String(e).split("\n")[0]}` })
      }
    }
    const tokens = tokensOf(2048)
    const cases: readonly (readonly [string, string, (s: Setup) => Promise<number>])[] = [
      ...SHAPES.map(([name, m, n, k]) => [`linear ${name}`, "GFLOP/s", async (s: Setup) => (await measureLinear(s.rt, m, n, k, defaultLinearVariant(s.rt.adapter.profile))).gflops] as const),
      ["scoring 2048 tokens", "tok/s", async (s: Setup) => tokens.length / ((await bestOf(() => s.model.logprobs(tokens), 0, 1)) / 1000)],
    ]
    for (const [name, unit, measure] of cases) {
      if (name.startsWith("scoring")) for (const s of setups) await s.model.logprobs(tokens) // compiles every kernel this length uses
      const best = new Map<string, number>()
      for (let round = 0; round < ROUNDS; round++) {
        for (const s of setups) best.set(s.label, Math.max(best.get(s.label) ?? 0, await measure(s)))
      }
      const base = best.get(SETUPS[0]!.label)
      for (const s of setups) {
        const value = best.get(s.label)!
        report({
          bench: "adapters",
          case: `${s.label}: ${name}`,
          value,
          unit,
          ...(base === undefined ? {} : { baseline: base, ratio: value / base }),
          note: `${describeAdapter(s.rt.adapter)}; best of ${ROUNDS} rounds taken in turn; baseline ${SETUPS[0]!.label}`,
        })
      }
    }
  } finally {
    for (const s of setups) {
      s.model.dispose()
      s.rt.destroy()
    }
    rmSync(dir, { recursive: true, force: true })
  }
}
