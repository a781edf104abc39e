// Used by ./setup and scripts/gpu-check.sh. Prints the adapter Dawn finds (ROPEWAY_BACKEND picks the
// backend) and exits 0, or prints why there is none and exits 1. With --kind it prints one word instead
// (gpu, software or none) and exits 0; with --json, one JSON line describing the adapter.
import { acquireRuntime, describeAdapter } from "../kernels/device.ts"

const kindOnly = process.argv.includes("--kind")
try {
  const rt = await acquireRuntime()
  const a = rt.adapter
  if (kindOnly) console.log(a.software ? "software" : "gpu")
  else if (process.argv.includes("--json")) console.log(JSON.stringify({ check: "adapter", summary: describeAdapter(a), ...a }))
  else console.log(`GPU adapter: ${describeAdapter(a)}`)
  rt.destroy()
} catch (e) {
  if (kindOnly) console.log("none")
  else console.error((e as Error).message)
  process.exit(kindOnly ? 0 : 1)
}
