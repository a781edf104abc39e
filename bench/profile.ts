/**
 * `bun run bench profile`: where the time goes, kernel by kernel, in one training step of the built-in
 * `tiny` model (1024 tokens: forward, lm_head, backward with per-layer recomputation) and in scoring
 * 2048 tokens with the scoring bench's model (4 chunks of 512). Per kernel and workgroup grid: calls,
 * ms per call, total, share of the sum, bytes bound per call and the rate that implies; then dispatches
 * per step and per layer. Times come from timestamp queries where the adapter has them, else from
 * replaying each distinct dispatch (kernels/profile.ts), which also gives the CPU time per call (steadier
 * than wall time on a shared machine); the unprofiled wall time of the same work is printed beside the
 * kernel sum (the difference is launch, submit and host time).
 *
 * Options: `--T=<n>` training tokens (default 1024), `--score=<n>` scoring tokens (default 2048),
 * `--only=training|scoring`, `--replay` (time by replay even where timestamps exist).
 */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { acquireRuntime, describeAdapter } from "../kernels/device.ts"
import { type KernelRow, Profiler } from "../kernels/profile.ts"
import { defaultInvFreq } from "../kernels/rope-table.ts"
import { tunedEntries, tuningMode } from "../kernels/tuning.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { fill } from "../kernels/scale.ts"
import type { Tensor } from "../kernels/tensor.ts"
import { readLlamaConfig } from "../plugins/models/llama/config.ts"
import { loadLlama } from "../plugins/models/llama/model.ts"
import { writeRandomLlama } from "../plugins/models/llama/random.ts"
import { createTrainableLlama } from "../plugins/models/llama/train.ts"
import { TINY_DIR } from "../plugins/models/tiny/tiny.ts"
import { jsonOutput } from "./harness.ts"
import { MODEL, tokensOf } from "./scoring.ts"

const arg = (name: string): string | undefined => process.argv.find((s) => s.startsWith(`--${name}=`))?.slice(name.length + 3)

/** Profiles `work` once (after one unprofiled warm-up run that compiles and is timed). */
async function profile(rt: GpuRuntime, title: string, layers: number, work: () => Promise<unknown>): Promise<void> {
  await work() // compile every pipeline outside the measurement
  await rt.sync()
  const d0 = rt.stats.dispatches
  const s0 = rt.stats.submits
  const t0 = performance.now()
  await work()
  await rt.sync()
  const wallMs = performance.now() - t0
  const dispatches = rt.stats.dispatches - d0
  const submits = rt.stats.submits - s0
  const profiler = Profiler.for(rt, { replay: process.argv.includes("--replay") })
  rt.profiler = profiler
  try {
    await work()
  } finally {
    rt.profiler = undefined
  }
  const rows = await profiler.rows(rt)
  printTable(title, rows, { wallMs, dispatches, submits, layers })
}

function printTable(title: string, rows: readonly KernelRow[], run: { wallMs: number; dispatches: number; submits: number; layers: number }): void {
  const total = rows.reduce((a, r) => a + r.calls * r.ms, 0)
  const sorted = [...rows].sort((a, b) => b.calls * b.ms - a.calls * a.ms)
  if (jsonOutput()) {
    for (const r of sorted) console.log(JSON.stringify({ bench: "profile", case: title, ...r, totalMs: r.calls * r.ms }))
    console.log(JSON.stringify({ bench: "profile", case: title, summary: { ...run, kernelMs: total } }))
    return
  }
  const source = rows[0]?.source ?? "replay"
  console.log(`\n${title}: ${run.wallMs.toFixed(0)} ms wall (unprofiled), kernels sum ${total.toFixed(0)} ms (${source}); ` +
    `${run.dispatches} dispatches (${(run.dispatches / run.layers).toFixed(0)} per layer), ${run.submits} submits`)
  console.log(`${"kernel".padEnd(44)} ${"grid".padEnd(12)} ${"calls".padStart(5)} ${"ms/call".padStart(8)} ${"cpu ms".padStart(8)} ${"total ms".padStart(9)} ${"share".padStart(6)} ${"MB/call".padStart(8)} ${"GB/s".padStart(6)}`)
  // One line per kernel and grid; the many tiny ones (< 0.5% each) folded into one line per kernel.
  const small = new Map<string, { calls: number; ms: number }>()
  for (const r of sorted) {
    const t = r.calls * r.ms
    if (t / total < 0.005) {
      const s = small.get(r.kernel) ?? { calls: 0, ms: 0 }
      small.set(r.kernel, { calls: s.calls + r.calls, ms: s.ms + t })
      continue
    }
    const mb = r.bytes / 1e6
    console.log(
      `${r.kernel.padEnd(44)} ${(r.groups[0] === 0 ? "" : r.groups.filter((g, i) => i < 2 || g > 1).join("×")).padEnd(12)} ${String(r.calls).padStart(5)} ${r.ms.toFixed(3).padStart(8)} ${(r.cpuMs === undefined ? "" : r.cpuMs.toFixed(3)).padStart(8)} ` +
        `${t.toFixed(1).padStart(9)} ${((100 * t) / total).toFixed(1).padStart(5)}% ${mb.toFixed(2).padStart(8)} ${(mb / r.ms).toFixed(1).padStart(6)}`,
    )
  }
  for (const [kernel, s] of small) {
    console.log(`${(kernel + " (small grids)").padEnd(44)} ${"".padEnd(12)} ${String(s.calls).padStart(5)} ${"".padStart(8)} ${"".padStart(8)} ${s.ms.toFixed(1).padStart(9)} ${((100 * s.ms) / total).toFixed(1).padStart(5)}%`)
  }
}

/** Each tuned (op, shape): the variant in use, and how it compares with the fastest candidate timed here. */
function printTuning(rt: GpuRuntime): void {
  const entries = tunedEntries(rt)
  if (jsonOutput()) {
    for (const e of entries) console.log(JSON.stringify({ bench: "profile", case: "tuning", ...e }))
    return
  }
  console.log(`\nkernel variants (tuning ${tuningMode(rt)}): in use, and its time against the fastest candidate measured on this machine`)
  console.log(`${"op".padEnd(16)} ${"shape".padEnd(34)} ${"in use".padEnd(16)} ${"source".padEnd(8)} ${"vs best".padStart(7)}  candidates (ms/call)`)
  for (const e of entries) {
    const times = Object.entries(e.ms)
    const best = Math.min(...times.map(([, ms]) => ms))
    const mine = e.ms[e.choice]
    const ratio = mine === undefined || times.length === 0 ? "" : `${(best / mine).toFixed(2)}×`
    console.log(`${e.op.padEnd(16)} ${e.shape.padEnd(34)} ${e.choice.padEnd(16)} ${e.source.padEnd(8)} ${ratio.padStart(7)}  ${times.map(([c, ms]) => `${c} ${ms.toFixed(2)}`).join(", ")}`)
  }
}

export async function run(rt: GpuRuntime): Promise<void> {
  const only = arg("only")
  if (only === undefined || only === "training") {
    const T = Number(arg("T") ?? 1024)
    const config = readLlamaConfig(TINY_DIR)
    const model = createTrainableLlama(rt, config, TINY_DIR)
    const grads = new Map<string, Tensor>()
    for (const p of model.params) {
      const g = rt.tensor(p.value.shape)
      fill(rt, g, 0)
      grads.set(p.name, g)
    }
    const base = defaultInvFreq(config.rope.base, config.headDim)
    const rope = { rotaryDim: config.headDim, invFreq: base.map((f) => f / 8), originalInvFreq: base, startTokens: 0, attentionScale: 1 }
    const tokens = Uint32Array.from({ length: T + 1 }, (_, i) => (i * 37 + 11) % 256)
    await profile(rt, `training step, tiny, T=${T}`, config.numLayers, () => model.lossAndGrad({ tokens, rope }, { grads: (n) => grads.get(n) }))
    rt.release(...grads.values())
    model.dispose()
  }
  if (only === undefined || only === "scoring") {
    const n = Number(arg("score") ?? 2048)
    const dir = mkdtempSync(join(tmpdir(), "ropeway-profile-"))
    try {
      writeRandomLlama(dir, MODEL)
      const model = await loadLlama(rt, dir)
      const tokens = tokensOf(n)
      await profile(rt, `scoring ${n} tokens, bench model (${MODEL.layers}L D${MODEL.hidden})`, MODEL.layers, () => model.logprobs(tokens))
      model.dispose()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }
  printTuning(rt)
}

if (import.meta.main) {
  const rt = await acquireRuntime()
  if (!jsonOutput()) console.log(`adapter: ${describeAdapter(rt.adapter)}`)
  await run(rt)
  rt.destroy()
}
