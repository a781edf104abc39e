// Exits 0 and prints the adapter when Dawn finds one; exits 1 with the fix otherwise (used by ./setup).
import { acquireRuntime, describeAdapter } from "../kernels/device.ts"

try {
  const rt = await acquireRuntime()
  console.log(`GPU adapter: ${describeAdapter(rt.adapter)}`)
  rt.destroy()
} catch (e) {
  console.error((e as Error).message)
  process.exit(1)
}
