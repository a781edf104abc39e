/**
 * Matmul GFLOP/s: `linear` (y = x·Wᵀ) on this adapter against a plain TypeScript loop (Float32Array,
 * ikj order, one thread) measured in the same process. GPU time is many dispatches recorded into one
 * batch, then one wait, divided by the count (launch overhead included, readback amortised away).
 */
import { acquireRuntime } from "../kernels/device.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { LINEAR_VARIANTS, type LinearVariant, defaultLinearVariant, linearCase } from "../kernels/testing/cases/matmul.ts"
import { rand } from "../kernels/testing/random.ts"
import { report } from "./harness.ts"

/** The baseline: C[M,N] = A[M,K]·B[K,N], B already transposed for it (its best layout). */
function tsMatmul(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number): void {
  c.fill(0)
  for (let i = 0; i < m; i++) {
    const ci = i * n
    for (let l = 0; l < k; l++) {
      const av = a[i * k + l]!
      const bl = l * n
      for (let j = 0; j < n; j++) c[ci + j]! += av * b[bl + j]!
    }
  }
}

interface Measured {
  readonly gflops: number
  readonly firstMs: number
  /** CPU-seconds per second this process got during the best run (llvmpipe uses every core: 2 here). */
  readonly cpuShare: number
}

/** Best time of `fn` over ≥ minMs and ≥ minRuns runs, with the process's CPU share during that run. */
async function bestWithShare(fn: () => unknown | Promise<unknown>, minMs: number, minRuns: number): Promise<{ ms: number; share: number }> {
  let best = { ms: Infinity, share: 0 }
  const start = performance.now()
  for (let runs = 0; runs < minRuns || performance.now() - start < minMs; runs++) {
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    await fn()
    const ms = performance.now() - t0
    const cpu = process.cpuUsage(c0)
    if (ms < best.ms) best = { ms, share: (cpu.user + cpu.system) / 1e3 / ms }
  }
  return best
}

/** The kernel table's linear case and launcher for `variant`, timed. */
export async function measureLinear(rt: GpuRuntime, m: number, n: number, k: number, variant: LinearVariant): Promise<Measured> {
  const launch = linearCase({ m, n, k }).setup(rt, variant)
  const t0 = performance.now()
  launch.run()
  await rt.sync()
  const firstMs = performance.now() - t0 // includes the kernel's compile when Mesa's cache is cold
  // Size the batch to ~250 ms so per-submit and wait costs vanish in the average.
  const t1 = performance.now()
  launch.run()
  await rt.sync()
  const reps = Math.max(1, Math.min(200, Math.round(250 / Math.max(0.05, performance.now() - t1))))
  const best = await bestWithShare(async () => {
    for (let r = 0; r < reps; r++) launch.run()
    await rt.sync()
  }, 600, 3)
  launch.release()
  return { gflops: (2 * m * n * k) / (best.ms / reps) / 1e6, firstMs, cpuShare: best.share }
}

async function measureTs(m: number, n: number, k: number): Promise<{ gflops: number; cpuShare: number }> {
  const a = rand(m * k, 3)
  const b = rand(k * n, 4)
  const c = new Float32Array(m * n)
  const best = await bestWithShare(() => tsMatmul(a, b, c, m, n, k), 0, 2)
  return { gflops: (2 * m * n * k) / best.ms / 1e6, cpuShare: best.share }
}

/** Other processes share these cores: the CPU share each side got says how clean a figure is. */
const shareNote = (gpu: Measured, ts: { gflops: number; cpuShare: number }): string =>
  `cpu-s/s ${gpu.cpuShare.toFixed(2)} vs baseline ${ts.cpuShare.toFixed(2)}; ` +
  `per cpu-s ${(gpu.gflops / gpu.cpuShare).toFixed(1)} vs ${(ts.gflops / ts.cpuShare).toFixed(1)} GFLOP`

export async function run(rt: GpuRuntime): Promise<void> {
  const shapes: readonly (readonly [string, number, number, number])[] = [
    ["1024³", 1024, 1024, 1024],
    // A 4-layer d=256 llama scoring 2048 tokens: attention projections / vocab head, MLP up+gate, down.
    ["x[2048,256]·W[256,256]ᵀ", 2048, 256, 256],
    ["x[2048,256]·W[768,256]ᵀ", 2048, 768, 256],
    ["x[2048,768]·W[256,768]ᵀ", 2048, 256, 768],
  ]
  const variant = defaultLinearVariant(rt.adapter.profile)
  for (const [name, m, n, k] of shapes) {
    const gpu = await measureLinear(rt, m, n, k, variant)
    const ts = await measureTs(m, n, k)
    report({
      bench: "matmul",
      case: `linear ${name}`,
      value: gpu.gflops,
      unit: "GFLOP/s",
      baseline: ts.gflops,
      ratio: gpu.gflops / ts.gflops,
      note: `${variant.name}, baseline TS ikj loop; ${shareNote(gpu, ts)}; first call ${gpu.firstMs.toFixed(0)} ms`,
    })
  }
  // The table's other variants, for comparison: on llvmpipe, the fallback for weights too tall for a
  // texture and the real-GPU kernel; on a GPU, llvmpipe's kernels.
  const ts = await measureTs(512, 512, 512)
  for (const other of LINEAR_VARIANTS.filter((v) => v !== variant)) {
    const g = await measureLinear(rt, 512, 512, 512, other)
    report({
      bench: "matmul",
      case: `linear 512³ ${other.name}`,
      value: g.gflops,
      unit: "GFLOP/s",
      baseline: ts.gflops,
      ratio: g.gflops / ts.gflops,
      note: shareNote(g, ts),
    })
  }
}

if (import.meta.main) {
  const rt = await acquireRuntime()
  await run(rt)
  rt.destroy()
}
