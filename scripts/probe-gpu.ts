// Used by ./setup. Prints the adapter Dawn finds (ROPEWAY_BACKEND picks the backend) and exits 0, or
// prints why there is none and exits 1. With --kind, prints one word instead: gpu, software or none.
import { acquireRuntime, describeAdapter } from "../kernels/device.ts"

const kindOnly = process.argv.includes("--kind")
try {
  const rt = await acquireRuntime()
  console.log(kindOnly ? (rt.adapter.software ? "software" : "gpu") : `GPU adapter: ${describeAdapter(rt.adapter)}`)
  rt.destroy()
} catch (e) {
  if (kindOnly) console.log("none")
  else console.error((e as Error).message)
  process.exit(kindOnly ? 0 : 1)
}
