/**
 * `bun run bench [--json] [matmul|attention|scoring|training|profile|adapters|runtimes ...]`: the benchmarks, each
 * figure a ratio against a baseline measured in the same process. Without names, every one but adapters
 * and runtimes (those run only when named); with names, only those.
 */
import { acquireRuntime, describeAdapter } from "../kernels/device.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { jsonOutput } from "./harness.ts"

const suites: Record<string, () => Promise<{ run: (rt: GpuRuntime) => Promise<void> }>> = {
  matmul: () => import("./matmul.ts"),
  attention: () => import("./attention.ts"),
  scoring: () => import("./scoring.ts"),
  training: () => import("./training.ts"),
  profile: () => import("./profile.ts"),
}
// Run only when named: they acquire their own adapters (adapters) or run the CLI under each runtime (runtimes).
const onDemand: Record<string, () => Promise<{ run: (rt: GpuRuntime) => Promise<void> }>> = {
  adapters: () => import("./adapters.ts"),
  runtimes: () => import("./runtimes.ts"),
}

const wanted = process.argv.slice(2).filter((a) => !a.startsWith("--"))
for (const name of wanted) {
  if (!(name in suites) && !(name in onDemand)) {
    console.error(`error: unknown benchmark "${name}"; known: ${[...Object.keys(suites), ...Object.keys(onDemand)].join(", ")}`)
    process.exit(1)
  }
}
const rt = await acquireRuntime()
if (!jsonOutput()) console.log(`adapter: ${describeAdapter(rt.adapter)}`)
for (const [name, load] of [...Object.entries(suites), ...Object.entries(onDemand)]) {
  if (name in onDemand && !wanted.includes(name)) continue
  if (wanted.length > 0 && !wanted.includes(name)) continue
  await (await load()).run(rt)
}
rt.destroy()
