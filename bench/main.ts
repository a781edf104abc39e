/**
 * `bun run bench [--json] [matmul|attention|scoring|training|profile ...]`: every benchmark, each figure a ratio against a
 * baseline measured in the same process. With names, runs only those.
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

const wanted = process.argv.slice(2).filter((a) => !a.startsWith("--"))
for (const name of wanted) {
  if (!(name in suites)) {
    console.error(`error: unknown benchmark "${name}"; known: ${Object.keys(suites).join(", ")}`)
    process.exit(1)
  }
}
const rt = await acquireRuntime()
if (!jsonOutput()) console.log(`adapter: ${describeAdapter(rt.adapter)}`)
for (const [name, load] of Object.entries(suites)) {
  if (wanted.length > 0 && !wanted.includes(name)) continue
  await (await load()).run(rt)
}
rt.destroy()
