/**
 * Causal attention (H=4, d=64, one chunk, queryOffset 0) at T = 1024, 4096, 16384: GFLOP/s of the
 * kernel the adapter's profile picks, against a plain single-thread TypeScript flash loop (Float32Array
 * data, online softmax) measured in the same process; and peak GPU buffer bytes (q + cache + output +
 * whatever the call allocates), which must grow as T, not T².
 */
import { acquireRuntime } from "../kernels/device.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { attentionCase, attentionInputs, defaultAttentionVariant } from "../kernels/testing/cases/attention.ts"
import { bestOf, report } from "./harness.ts"

const H = 4
const D = 64
/** Query rows per head timed by the TS baseline when the whole sequence would take too long. */
const SAMPLE_ROWS = 48

/** The TS baseline: per (head, query row) one pass over keys 0..i with an online softmax. Returns useful flops. */
function tsAttention(q: Float32Array, k: Float32Array, v: Float32Array, rows: readonly number[], out: Float32Array): number {
  const stride = H * D
  const scale = 1 / Math.sqrt(D)
  const acc = new Float64Array(D)
  let flops = 0
  for (let h = 0; h < H; h++) {
    const c0 = h * D
    for (const i of rows) {
      const qb = i * stride + c0
      let m = -Infinity
      let l = 0
      acc.fill(0)
      for (let j = 0; j <= i; j++) {
        const kb = j * stride + c0
        let s = 0
        for (let c = 0; c < D; c++) s += q[qb + c]! * k[kb + c]!
        s *= scale
        let p = 1
        if (s > m) {
          const corr = Math.exp(m - s)
          l *= corr
          for (let c = 0; c < D; c++) acc[c]! *= corr
          m = s
        } else p = Math.exp(s - m)
        l += p
        for (let c = 0; c < D; c++) acc[c]! += p * v[kb + c]!
      }
      for (let c = 0; c < D; c++) out[qb + c] = acc[c]! / l
      flops += 4 * D * (i + 1)
    }
  }
  return flops
}

/** Best wall time of `fn` over calls where the process had both cores; stops after `clean` such calls. */
async function cleanBest(
  fn: () => Promise<void>,
  o: { readonly clean: number; readonly minCalls: number; readonly maxCalls: number },
): Promise<{ ms: number; clean: number; calls: number }> {
  let best = Infinity
  let bestClean = Infinity
  let clean = 0
  let calls = 0
  while (calls < o.maxCalls && (calls < o.minCalls || clean < o.clean)) {
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    await fn()
    const ms = performance.now() - t0
    const used = process.cpuUsage(cpu0)
    const cpuMs = (used.user + used.system) / 1000
    calls++
    best = Math.min(best, ms)
    if (cpuMs >= 1.8 * ms) {
      clean++
      bestClean = Math.min(bestClean, ms)
    }
  }
  return { ms: clean > 0 ? bestClean : best, clean, calls }
}

export async function run(rt: GpuRuntime): Promise<void> {
  const memory: number[] = []
  // The kernel table's attention case and launcher (the variant this adapter's profile picks, its
  // production rows per invocation), at bench sizes: one chunk, no spare cache rows.
  const variant = defaultAttentionVariant(rt.adapter.profile)
  for (const t of [1024, 4096, 16384]) {
    const usefulFlops = 2 * t * t * D * H
    const params = { heads: H, kvHeads: H, headDim: D, t, spareRows: 0 }
    const { q, k, v } = attentionInputs(params)

    // Peak of buffers created for this case only: empty the pool first so nothing is reused.
    await rt.sync()
    rt.trim()
    rt.resetPeak()
    const live0 = rt.stats.liveBytes
    const launch = attentionCase(params).setup(rt, variant)
    await rt.sync()
    rt.trim() // k/v staging is not part of attention's footprint
    rt.resetPeak()
    const inputs = rt.stats.liveBytes - live0
    launch.run()
    await rt.sync()
    const peak = rt.stats.peakBytes - live0
    const got = (await launch.read()).o!
    if (t >= 4096) memory.push(peak)

    // Warm (compiled) by the call above. The kernel runs on both cores and the baseline on one, so a
    // neighbour's load skews the ratio: as in the reference measurements, keep the best "clean" call
    // (the process used ≥ 1.8 CPU-s per second, i.e. had both cores), falling back to the best of all.
    const timing = await cleanBest(async () => {
      launch.run()
      await rt.sync()
    }, t >= 16384 ? { clean: 1, minCalls: 2, maxCalls: 5 } : { clean: 3, minCalls: 3, maxCalls: 15 })
    const ms = timing.ms
    const gflops = usefulFlops / ms / 1e6

    // Baseline: every row at 1k and 4k; at 16k a spread sample of rows, scaled by its flop count.
    const all = t <= 4096
    const rows = all ? [...Array(t).keys()] : Array.from({ length: SAMPLE_ROWS }, (_, r) => Math.floor(((r + 0.5) * t) / SAMPLE_ROWS))
    const ref = new Float32Array(t * H * D)
    let baseFlops = 0
    // Best of 3 where a pass is short (under a second); the whole 4k pass (~2.6 s) once. Its share of a
    // core goes in the note: below ~0.9 a neighbour slowed the baseline too.
    const cpu0 = process.cpuUsage()
    const w0 = performance.now()
    const baseMs = await bestOf(() => (baseFlops = tsAttention(q, k, v, rows, ref)), 0, t === 4096 ? 1 : 3)
    const used = process.cpuUsage(cpu0)
    const baseShare = (used.user + used.system) / 1000 / (performance.now() - w0)
    const baseGflops = baseFlops / baseMs / 1e6
    let err = 0
    for (const i of rows) for (let c = 0; c < H * D; c++) err = Math.max(err, Math.abs(ref[i * H * D + c]! - got[i * H * D + c]!))
    if (!(err < 1e-4)) throw new Error(`attention bench: T=${t} kernel differs from the TS baseline by ${err}`)

    report({
      bench: "attention",
      case: `T=${t} H=${H} d=${D} causal`,
      value: gflops,
      unit: "GFLOP/s",
      baseline: baseGflops,
      ratio: gflops / baseGflops,
      note: `${ms.toFixed(0)} ms/call, ${variant.name}, best ${timing.clean > 0 ? `of ${timing.clean} clean calls (≥ 1.8 CPU-s/s)` : `of ${timing.calls} calls, none clean: machine contended`}; TS baseline 1 thread (${baseShare.toFixed(2)} of a core) ${
        all ? `all ${t} rows` : `${SAMPLE_ROWS} rows spread over the sequence, rate scaled by flop count (whole: ~${((usefulFlops / baseGflops / 1e9)).toFixed(0)} s)`
      }; useful flops 2·T²·d·H; max |diff| ${err.toExponential(1)}`,
    })
    report({
      bench: "attention",
      case: `T=${t} peak buffer bytes`,
      value: peak / 2 ** 20,
      unit: "MiB",
      note: `q + K/V cache + output + anything the call allocates (q and cache alone: ${(inputs / 2 ** 20).toFixed(1)} MiB)`,
    })
    launch.release()
  }
  const [m4, m16] = memory
  if (m4 !== undefined && m16 !== undefined) {
    report({ bench: "attention", case: "peak bytes 16k / 4k", value: m16 / 2 ** 20, unit: "MiB", baseline: m4 / 2 ** 20, ratio: m16 / m4, note: "linear in T gives 4; T² would give 16" })
  }
}

if (import.meta.main) {
  const rt = await acquireRuntime()
  await run(rt)
  rt.destroy()
}
