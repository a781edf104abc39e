/**
 * `bun run bench scale [--shapes=smollm2-135m,llama-3.2-1b]`: ropeway on models with the exact shapes of
 * published checkpoints (random bf16 weights, sharded, made here in a temporary folder and removed after),
 * each figure against a baseline from the same run:
 *
 * - load: seconds, and the process's peak resident memory (VmHWM) and the device's buffer bytes against
 *   the weight files' size (each measurement in a child process, so one shape's peak is not another's);
 * - scoring tokens/s at 2k and 8k against llama.cpp's CPU build on the same weights (GGUF f16, which holds
 *   every bf16 value of these weights exactly; f16 KV cache, flash attention, 2 threads);
 * - peak device bytes of scoring at 4k, 8k and 16k, each against the memory plan's KV cache and activations
 *   on this device's kernels (the plan must hold it), and its growth against the KV cache's (linear in length);
 * - LoRA training tokens/s at 2k (r 8 on q/k/v/o) against scoring tokens/s at the same length, and its
 *   peak device bytes against the training plan;
 * - one search generation at 8k (4 candidate tables, one 8k-token sample each, perplexity fitness) against
 *   one scoring at that length;
 * - the memory plan's longest scoring length on this machine.
 *
 * A shape whose plan does not fit this device is reported with the plan's one-line reason instead.
 * `--score=2048` and `--memory=4096,8192` choose the lengths timed and measured (`--memory=` none; a length
 * in both is measured in its timed run), `--train=2048` and `--search=8192` the training and search lengths
 * (defaults: 2048 and the longest scoring length), and `--skip=train,search` leaves those out, for machines
 * where the 1B shape at 8k–16k, or the gpu kernels on a software adapter, would take hours.
 *
 * `--check` measures instead what a real model at a real length needs: a child process loads the shape and
 * scores 512 tokens, twice (the first run finds the Mesa shader cache as it is, or with `--cold` empty,
 * and fills it; the second finds it warm), each reporting its peak resident memory (VmHWM) against the
 * weight files, and the log-probs are compared with the float64 reference (plugins/models/llama/model.ref.ts,
 * one layer's weights in float64 at a time) on the first `--reference=N` tokens (default all 512): a causal
 * prefix, whose log-probs do not depend on later tokens (the shapes' RoPE tables do not depend on length),
 * scored with the default (16-bit) KV cache and again with an f32 one. `--once` does only the first run;
 * `--dir=PATH` makes the model there once and keeps it for later runs.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { writeGgufLazy } from "../common/gguf.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { Checkpoint } from "../common/safetensors.ts"
import { llamaFamily } from "../plugins/models/llama/family.ts"
import { llamaGgufFromFolder } from "../plugins/models/llama/gguf-export.ts"
import { inspectLlamaModel } from "../plugins/models/llama/family.ts"
import { randomTokens, referenceLogprobs, referenceModelFromFolder } from "../plugins/models/llama/model.ref.ts"
import { type PublishedShape, PUBLISHED_SHAPES, writePublishedShape } from "../plugins/models/llama/random.ts"
import { checkFits, deviceBudget, formatBytes, longestFit, withKernels } from "../plugins/models/memory.ts"
import { report } from "./harness.ts"

const BUN = resolve(import.meta.dirname, "../node_modules/.bin/bun")
/** `--NAME=a,b` as numbers, or the default (`--NAME=` alone: none). */
function lengthsFlag(name: string, fallback: readonly number[]): readonly number[] {
  const flag = process.argv.find((a) => a.startsWith(`--${name}=`))
  if (flag === undefined) return fallback
  const list = flag.slice(name.length + 3).split(",").filter((x) => x !== "").map(Number)
  if (list.some((n) => !Number.isInteger(n) || n < 2)) throw new Error(`bench scale: --${name} takes token counts ≥ 2, got "${flag}"`)
  return list
}
const SCORE_LENGTHS = lengthsFlag("score", [2048, 8192])
const MEMORY_LENGTHS = lengthsFlag("memory", [4096, 8192, 16384])
const TRAIN_LENGTH = lengthsFlag("train", [2048])[0] ?? 2048
const SEARCH_LENGTH = lengthsFlag("search", [SCORE_LENGTHS.at(-1) ?? 8192])[0] ?? 8192
/** `--skip=train,search`: measurements left out. */
const SKIP = new Set(process.argv.find((a) => a.startsWith("--skip="))?.slice("--skip=".length).split(",") ?? [])
for (const s of SKIP) if (s !== "train" && s !== "search") throw new Error(`bench scale: --skip takes train and search, got "${s}"`)

function tokensOf(n: number, vocab: number): number[] {
  let s = 12345
  return Array.from({ length: n }, () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 8) % vocab)
}

/** Peak resident memory of this process so far (Linux), bytes. */
function peakRss(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"))
  return m === null ? Number.NaN : Number(m[1]) * 1024
}

interface ChildResult {
  readonly [key: string]: unknown
}

/** Runs a child measurement (this file, `child <task> <json>`) and returns its last JSON line. */
function child(task: string, args: Record<string, unknown>, env: Readonly<Record<string, string>> = {}): ChildResult {
  const r = spawnSync(BUN, [import.meta.filename, "child", task, JSON.stringify(args)], { env: { ...process.env, EGL_PLATFORM: "surfaceless", ...env }, encoding: "utf8", maxBuffer: 1 << 26 })
  const lines = (r.stdout ?? "").split("\n").filter((l) => l.startsWith("{"))
  if (r.status !== 0 || lines.length === 0) return { error: (r.stderr ?? "").split("\n").filter((l) => l.startsWith("error") || l.includes("Error")).slice(0, 2).join(" ") || `exit ${r.status}` }
  return JSON.parse(lines.at(-1)!) as ChildResult
}

const CHECK = process.argv.includes("--check")
const CHECK_LENGTH = 512
const REFERENCE = lengthsFlag("reference", [CHECK_LENGTH])[0] ?? 0
const KEEP = process.argv.find((a) => a.startsWith("--dir="))?.slice("--dir=".length)

export async function run(rt: GpuRuntime): Promise<void> {
  const flag = process.argv.find((a) => a.startsWith("--shapes="))
  const shapes = (flag === undefined ? ["smollm2-135m", "llama-3.2-1b"] : flag.slice("--shapes=".length).split(",")) as PublishedShape[]
  if (REFERENCE > CHECK_LENGTH) throw new Error(`bench scale: --reference=${REFERENCE} exceeds the ${CHECK_LENGTH} tokens --check scores`)
  for (const shape of shapes) {
    if (!(shape in PUBLISHED_SHAPES)) throw new Error(`bench scale: unknown shape "${shape}"; known: ${Object.keys(PUBLISHED_SHAPES).join(", ")}`)
    const dir = KEEP === undefined ? mkdtempSync(join(tmpdir(), `ropeway-scale-${shape}-`)) : join(KEEP, shape)
    try {
      await (CHECK ? checkShape : runShape)(rt, shape, dir)
    } finally {
      if (KEEP === undefined) rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** Makes the shape in `dir` (unless a kept one is there) and reports its weight files' size. */
function makeShape(shape: PublishedShape, dir: string): number {
  const t0 = performance.now()
  const made = existsSync(join(dir, "config.json"))
  if (!made) {
    mkdirSync(dir, { recursive: true })
    writePublishedShape(dir, shape)
  }
  const files = Checkpoint.open(dir).files().filter((f) => f.endsWith(".safetensors"))
  const fileBytes = files.reduce((a, f) => a + statSync(join(dir, f)).size, 0)
  report({ bench: "scale", case: `${shape}: weight files`, value: fileBytes / 2 ** 20, unit: "MiB", note: `${files.length} bf16 shards, ${made ? `kept in ${dir}` : `made in ${((performance.now() - t0) / 1000).toFixed(1)} s`}` })
  return fileBytes
}

/** `--check`: peak process memory of scoring 512 tokens (shader cache as found or cold, then warm) and agreement with float64. */
async function checkShape(_rt: GpuRuntime, shape: PublishedShape, dir: string): Promise<void> {
  const fileBytes = makeShape(shape, dir)
  const tokens = randomTokens(CHECK_LENGTH, PUBLISHED_SHAPES[shape].vocab, 9)
  const cold = process.argv.includes("--cold")
  const cache = cold ? mkdtempSync(join(tmpdir(), "ropeway-shader-cache-")) : undefined
  const env: Record<string, string> = cache === undefined ? {} : { MESA_SHADER_CACHE_DIR: cache }
  const runs: ChildResult[] = []
  try {
    const order = [cold ? "cold shader cache" : "shader cache as found", "warm shader cache"]
    for (const which of process.argv.includes("--once") ? order.slice(0, 1) : order) {
      const r = child("check", { dir, tokens }, env)
      if (typeof r.error === "string") {
        report({ bench: "scale", case: `${shape}: score ${CHECK_LENGTH} (${which})`, value: Number.NaN, unit: "", note: r.error })
        return
      }
      runs.push(r)
      const mib = (b: number) => b / 2 ** 20
      report({ bench: "scale", case: `${shape}: peak process memory, load + score ${CHECK_LENGTH} (${which})`, value: mib(r.rss as number), unit: "MiB", baseline: mib(fileBytes), ratio: (r.rss as number) / fileBytes, note: `VmHWM (after load ${mib(r.rssLoad as number).toFixed(0)} MiB); baseline: the weight files` })
      report({ bench: "scale", case: `${shape}: score ${CHECK_LENGTH} (${which})`, value: r.seconds as number, unit: "s", note: `load ${(r.loadSeconds as number).toFixed(1)} s; device bytes ${mib(r.weightBytes as number).toFixed(0)} MiB after load, peak ${mib(r.peakDeviceBytes as number).toFixed(0)} MiB` })
    }
  } finally {
    if (cache !== undefined) rmSync(cache, { recursive: true, force: true })
  }
  if (REFERENCE < 2) return
  const t0 = performance.now()
  const want = referenceLogprobs(referenceModelFromFolder(dir), tokens.slice(0, REFERENCE))
  const seconds = (performance.now() - t0) / 1000
  const prefix = REFERENCE < CHECK_LENGTH ? `the first ${REFERENCE} of ${CHECK_LENGTH} tokens (a causal prefix)` : `all ${CHECK_LENGTH} tokens`
  const last = runs.at(-1)!
  for (const [cache, got] of [["f32", last.logprobsF32], ["default (the weights' 16-bit)", last.logprobs]] as const) {
    let worst = 0
    let at = 0
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs((got as number[])[i]! - want[i]!)
      if (d > worst) [worst, at] = [d, i]
    }
    report({ bench: "scale", case: `${shape}: max |Δ log p| vs float64, ${cache} KV cache`, value: worst, unit: "nats", note: `${want.length} positions of ${prefix}, worst at ${at}; float64 reference ${seconds.toFixed(0)} s` })
  }
}

async function runShape(rt: GpuRuntime, shape: PublishedShape, dir: string): Promise<void> {
  const fileBytes = makeShape(shape, dir)

  const m = inspectLlamaModel(dir)
  const longest = longestFit(llamaFamily, m, deviceBudget(rt))
  report({ bench: "scale", case: `${shape}: plan's longest input`, value: longest, unit: "tokens", note: `scoring in chunks of 512 on this device (${formatBytes(deviceBudget(rt).memory?.bytes ?? Number.NaN)} available)` })

  // load, memory against the files, scoring speed, and memory at three lengths
  const score = child("score", { dir, timed: SCORE_LENGTHS, memory: MEMORY_LENGTHS })
  if (typeof score.error === "string") {
    report({ bench: "scale", case: `${shape}: scoring`, value: Number.NaN, unit: "", note: score.error })
    return
  }
  report({ bench: "scale", case: `${shape}: load`, value: score.loadSeconds as number, unit: "s" })
  report({ bench: "scale", case: `${shape}: device bytes after load`, value: (score.weightBytes as number) / 2 ** 20, unit: "MiB", baseline: fileBytes / 2 ** 20, ratio: (score.weightBytes as number) / fileBytes, note: "baseline: the weight files" })
  report({ bench: "scale", case: `${shape}: peak process memory (load + score 512)`, value: (score.rss512 as number) / 2 ** 20, unit: "MiB", baseline: fileBytes / 2 ** 20, ratio: (score.rss512 as number) / fileBytes, note: "VmHWM; baseline: the weight files" })

  const gguf = join(dir, "model-f16.gguf")
  const g = llamaGgufFromFolder(m, { dtype: "f16" })
  writeGgufLazy(gguf, g.metadata, g.tensors)
  const { scoreWithLlamaCpp } = await import("./llamacpp.ts")
  for (const n of SCORE_LENGTHS) {
    const tps = (score.tokensPerSecond as Record<string, number>)[n]!
    let cpp = Number.NaN
    try {
      cpp = n / (await scoreWithLlamaCpp(gguf, tokensOf(n, PUBLISHED_SHAPES[shape].vocab), { flashAttention: true, kvType: "F16", threads: 2 })).seconds
    } catch (e) {
      report({ bench: "scale", case: `${shape}: llama.cpp ${n}`, value: Number.NaN, unit: "", note: String(e).slice(0, 120) })
    }
    report({ bench: "scale", case: `${shape}: scoring ${n} tokens`, value: tps, unit: "tok/s", baseline: cpp, ratio: tps / cpp, note: "baseline: llama.cpp CPU, same weights (GGUF f16), f16 KV, flash attention, 2 threads" })
  }
  const peaks = score.peakBytes as Record<string, number>
  for (const n of MEMORY_LENGTHS) {
    // the plan that admits a run: its KV cache and activations on this device's kernels hold the measured peak
    const plan = llamaFamily.memory(m, n, withKernels({}, deviceBudget(rt)))
    const planned = (plan.kvCache + plan.activations) / 2 ** 20
    report({ bench: "scale", case: `${shape}: scoring ${n} peak device bytes`, value: peaks[n]! / 2 ** 20, unit: "MiB", baseline: planned, ratio: peaks[n]! / 2 ** 20 / planned, note: "above the weights; baseline: the plan's KV cache + activations (≤ 1: the plan holds it)" })
  }
  const [lo, hi] = [MEMORY_LENGTHS[0], MEMORY_LENGTHS.at(-1)]
  if (lo !== undefined && hi !== undefined && hi > lo) {
    // linear in length: the peak grows by the KV cache's growth alone (activations are one chunk's)
    const kv = (n: number) => llamaFamily.memory(m, n, withKernels({}, deviceBudget(rt))).kvCache
    const grew = (peaks[hi]! - peaks[lo]!) / 2 ** 20
    report({ bench: "scale", case: `${shape}: peak growth ${lo} → ${hi}`, value: grew, unit: "MiB", baseline: (kv(hi) - kv(lo)) / 2 ** 20, ratio: grew / ((kv(hi) - kv(lo)) / 2 ** 20), note: "baseline: the KV cache's growth (1×: linear in length)" })
  }

  if (shape !== "smollm2-135m") return
  const tn = TRAIN_LENGTH
  const scored = (score.tokensPerSecond as Record<string, number>)[tn] ?? Number.NaN
  const train = SKIP.has("train") ? { error: "skipped" } : child("train", { dir, length: tn })
  if (typeof train.error === "string") report({ bench: "scale", case: `${shape}: LoRA training ${tn}`, value: Number.NaN, unit: "", note: train.error })
  else {
    report({ bench: "scale", case: `${shape}: LoRA training ${tn} tokens`, value: train.tokensPerSecond as number, unit: "tok/s", baseline: scored, ratio: (train.tokensPerSecond as number) / scored, note: `r 8 on q/k/v/o; baseline: scoring ${tn} tokens` })
    const [peak, planned] = [(train.peakBytes as number) / 2 ** 20, (train.planBytes as number) / 2 ** 20]
    report({ bench: "scale", case: `${shape}: LoRA training ${tn} peak device bytes`, value: peak, unit: "MiB", baseline: planned, ratio: peak / planned, note: "weights, adapters, optimizer state and activations; baseline: the training plan on this device's kernels (≤ 1: the plan holds it)" })
  }
  const n = SEARCH_LENGTH
  const search = SKIP.has("search") ? { error: "skipped" } : child("search", { dir, length: n, population: 4 })
  const once = n / ((score.tokensPerSecond as Record<string, number>)[n] ?? Number.NaN)
  if (typeof search.error === "string") report({ bench: "scale", case: `${shape}: search generation ${n}`, value: Number.NaN, unit: "", note: search.error })
  else report({ bench: "scale", case: `${shape}: search generation at ${n}`, value: search.seconds as number, unit: "s", baseline: once, ratio: (search.seconds as number) / once, note: `4 candidates × one ${n}-token sample; baseline: one ${n}-token scoring` })
}

// ---- child measurements ---------------------------------------------------------------------------

/** Load time and bytes, peak RSS after 512 tokens, tokens/s at the timed lengths, device peaks at the memory lengths. */
async function scoreTask(rt: GpuRuntime, m: ReturnType<typeof inspectLlamaModel>, dir: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const vocab = m.config.vocabSize
  const out: Record<string, unknown> = {}
  const timed = args.timed as number[]
  const memory = args.memory as number[]
  checkFits(llamaFamily, m, Math.max(...timed, ...memory), deviceBudget(rt))
  const t0 = performance.now()
  const model = await llamaFamily.load(rt, m)
  await rt.sync()
  out.loadSeconds = (performance.now() - t0) / 1000
  out.weightBytes = rt.stats.liveBytes
  await model.logprobs(tokensOf(512, vocab), { rope: m.rope(512) })
  out.rss512 = peakRss()
  const tps: Record<number, number> = {}
  const peaks: Record<number, number> = {}
  /** Scores n tokens from a trimmed pool, so the device's peak above the weights is this run's. */
  const measured = async (n: number, tokens: number[]): Promise<void> => {
    rt.flush()
    rt.trim()
    rt.resetPeak()
    const base = rt.stats.liveBytes
    await model.logprobs(tokens, { rope: m.rope(n) })
    peaks[n] = rt.stats.peakBytes - base
  }
  for (const n of timed) {
    const toks = tokensOf(n, vocab)
    await model.logprobs(toks.slice(0, 600), { rope: m.rope(n) }) // compiles what this length uses
    const s = performance.now()
    if (memory.includes(n)) await measured(n, toks) // (its buffers allocated inside the timing: a small share)
    else await model.logprobs(toks, { rope: m.rope(n) })
    tps[n] = n / ((performance.now() - s) / 1000)
  }
  out.tokensPerSecond = tps
  for (const n of memory) if (peaks[n] === undefined) await measured(n, tokensOf(n, vocab))
  out.peakBytes = peaks
  model.dispose()
  return out
}

/** Peak RSS of load + scoring the given tokens, with their log-probs on the default cache and an f32 one (for the float64 agreement). */
async function checkTask(rt: GpuRuntime, m: ReturnType<typeof inspectLlamaModel>, dir: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const vocab = m.config.vocabSize
  const out: Record<string, unknown> = {}
  const tokens = args.tokens as number[]
  checkFits(llamaFamily, m, tokens.length, deviceBudget(rt))
  const t0 = performance.now()
  const model = await llamaFamily.load(rt, m)
  await rt.sync()
  out.loadSeconds = (performance.now() - t0) / 1000
  out.weightBytes = rt.stats.liveBytes
  out.rssLoad = peakRss()
  const t1 = performance.now()
  out.logprobs = Array.from(await model.logprobs(tokens, { rope: m.rope(tokens.length) }))
  out.seconds = (performance.now() - t1) / 1000
  out.rss = peakRss()
  out.peakDeviceBytes = rt.stats.peakBytes
  // the 16-bit cache rounds K and V (~1e-2 in log p); the float64 agreement is stated with an f32 one too
  out.logprobsF32 = Array.from(await model.logprobs(tokens, { rope: m.rope(tokens.length), kvCache: "f32" }))
  model.dispose()
  return out
}

/** LoRA training tokens/s at the given length (r 8 on q/k/v/o). */
async function trainTask(rt: GpuRuntime, m: ReturnType<typeof inspectLlamaModel>, dir: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const vocab = m.config.vocabSize
  const out: Record<string, unknown> = {}
  const T = args.length as number
  const { Optimizer } = await import("../training/optimizer.ts")
  const { resolveRope } = await import("../plugins/rope/index.ts")
  const lora = { rank: 8, alpha: 16, dropout: 0.05, targets: ["q_proj", "k_proj", "v_proj", "o_proj"], seed: 1 }
  const plan = checkFits(llamaFamily, m, T, deviceBudget(rt), { train: { mode: "lora", rank: 8, targets: lora.targets } })
  const model = llamaFamily.trainable!(rt, m.config, dir, { lora })
  const opt = new Optimizer(rt, model.params, {})
  const rope = resolveRope(m.config.rope)(T)
  const step = async (i: number) => {
    opt.zeroGrad()
    await model.lossAndGrad({ tokens: tokensOf(T + 1 + i, vocab).slice(i), rope, dropoutSeed: i }, { grads: (n) => opt.grad(n) })
    await opt.step(1e-4)
  }
  await step(0) // compiles (and times variants: what their probes left pooled goes)
  rt.flush()
  rt.trim()
  rt.resetPeak()
  const s = performance.now()
  await step(1)
  await step(2)
  out.tokensPerSecond = (2 * T) / ((performance.now() - s) / 1000)
  out.peakBytes = rt.stats.peakBytes
  out.planBytes = plan.total
  opt.dispose()
  model.dispose()
  return out
}

/** Seconds of one search generation: `population` candidate tables scored on one sample. */
async function searchTask(rt: GpuRuntime, m: ReturnType<typeof inspectLlamaModel>, dir: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const vocab = m.config.vocabSize
  const out: Record<string, unknown> = {}
  const n = args.length as number
  const population = args.population as number
  const { perplexity } = await import("../plugins/search/fitness.ts")
  const { resolveRope } = await import("../plugins/rope/index.ts")
  checkFits(llamaFamily, m, n, deviceBudget(rt))
  const model = await llamaFamily.load(rt, m)
  const sample = { tokens: Uint32Array.from(tokensOf(n, vocab)), targets: undefined }
  const scalings = [{ rope_type: "linear", factor: 4 }, { rope_type: "dynamic", factor: 4 }, { rope_type: "yarn", factor: 4 }, { rope_type: "yarn", factor: 6 }].slice(0, population)
  const tables = scalings.map((sc) => resolveRope({ ...m.config.rope, scaling: sc, scalingKey: "bench" })(n))
  await model.logprobs(sample.tokens.subarray(0, 600), { rope: tables[0]! })
  const s = performance.now()
  for (const t of tables) await perplexity(model, [sample], t)
  out.seconds = (performance.now() - s) / 1000
  model.dispose()
  return out
}

const CHILD_TASKS: Record<string, typeof scoreTask> = { score: scoreTask, check: checkTask, train: trainTask, search: searchTask }

async function childMain(task: string, args: Record<string, unknown>): Promise<void> {
  const { acquireRuntime } = await import("../kernels/device.ts")
  const run = CHILD_TASKS[task]
  if (run === undefined) throw new Error(`bench scale child: unknown task ${task}`)
  const rt = await acquireRuntime()
  const dir = args.dir as string
  console.log(JSON.stringify(await run(rt, inspectLlamaModel(dir), dir, args)))
  rt.destroy()
}

if (import.meta.main) {
  const [mode, task, json] = process.argv.slice(2)
  if (mode === "child") {
    await childMain(task!, JSON.parse(json!) as Record<string, unknown>).catch((e: unknown) => {
      console.error(`error: ${e instanceof Error ? e.message : String(e)}`)
      process.exit(1)
    })
  } else {
    const { acquireRuntime } = await import("../kernels/device.ts")
    const rt = await acquireRuntime()
    await run(rt)
    rt.destroy()
  }
}
