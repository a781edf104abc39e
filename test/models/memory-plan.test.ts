/**
 * The llama family's memory plan against the bytes the device actually held (GpuRuntime's peak), scoring
 * and training, and the checks built on it: the longest length that fits, one-line refusals naming what is
 * needed and what there is, before anything is loaded (score, finetune), and `ropeway inspect`.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { Effect, Exit } from "effect"
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import type { GpuRuntime } from "../../kernels/runtime.ts"
import { llamaFamily } from "../../plugins/models/llama/family.ts"
import { randomTokens } from "../../plugins/models/llama/model.ref.ts"
import { writeRandomLlama } from "../../plugins/models/llama/random.ts"
import { budgetOf, checkFits, deviceBudget, longestFit, parseMemory, whyNotFits, withKernels } from "../../plugins/models/memory.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { runFinetune } from "../../stages/finetune.ts"
import { Optimizer } from "../../training/optimizer.ts"
import { gpu } from "../gpu-shared.ts"
import { ownStderr, runCli } from "./cli-helpers.ts"
import { removeDir, tempDir } from "./random-model.ts"

const root = tempDir("ropeway-plan-")
afterAll(() => removeDir(root))

const SHAPES = {
  tied: { vocab: 3000, hidden: 128, layers: 3, heads: 4, kvHeads: 2, intermediate: 384, maxPositions: 4096, tied: true, seed: 1 },
  wide: { vocab: 512, hidden: 256, layers: 2, heads: 4, kvHeads: 4, intermediate: 512, maxPositions: 4096, seed: 2 },
  // (the KV cache outweighs the rest: what a length holds beyond another shows)
  deep: { vocab: 512, hidden: 128, layers: 8, heads: 4, kvHeads: 4, intermediate: 256, maxPositions: 4096, seed: 3 },
} as const
const dirOf = (name: keyof typeof SHAPES): string => {
  const dir = join(root, name)
  writeRandomLlama(dir, SHAPES[name], { dtype: "BF16" })
  return dir
}
const dirs = { tied: dirOf("tied"), wide: dirOf("wide"), deep: dirOf("deep") }

/** Peak device bytes of `work`, above what was live before it. */
async function peakOf(rt: GpuRuntime, work: () => Promise<void>): Promise<number> {
  rt.flush()
  rt.trim()
  rt.resetPeak()
  const before = rt.stats.liveBytes
  await work()
  await rt.sync()
  return rt.stats.peakBytes - before
}

describe("the plan holds what the device held", () => {
  for (const name of ["tied", "wide"] as const) {
    // (2000 tokens: four chunks, whose attention windows grow the cpu kernels' pool of K/V texture copies)
    for (const [T, chunk] of [[700, 256], [300, 512], [2000, 512]] as const) {
      test(`${name}: scoring ${T} tokens in chunks of ${chunk}: measured ≤ plan ≤ 1.5× measured`, async () => {
        const rt = await gpu()
        const m = llamaFamily.inspect(dirs[name])
        const peak = await peakOf(rt, async () => {
          const model = await llamaFamily.load(rt, m)
          await model.logprobs(randomTokens(T, SHAPES[name].vocab, 1), { rope: m.rope(T), chunk })
          model.dispose()
        })
        // the plan of the kernels this device runs (llvmpipe's textures and padded outputs, or storage read in place)
        const plan = llamaFamily.memory(m, T, withKernels({ chunk }, deviceBudget(rt)))
        expect(plan.total).toBeGreaterThanOrEqual(peak)
        expect(plan.total).toBeLessThanOrEqual(1.5 * peak)
      })
    }
    // (2000 tokens: the tied head's logits come in two blocks, two sets of sizes the pool keeps)
    for (const [mode, T] of [["full", 512], ["lora", 512], ["lora", 2000]] as const) {
      test(`${name}: one ${mode} training step of ${T} tokens: measured ≤ plan ≤ 1.5× measured`, async () => {
        const rt = await gpu()
        const m = llamaFamily.inspect(dirs[name])
        const lora = { rank: 8, alpha: 16, dropout: 0.1, targets: ["q_proj", "v_proj"], seed: 1 }
        const peak = await peakOf(rt, async () => {
          const model = llamaFamily.trainable!(rt, m.config, dirs[name], mode === "lora" ? { lora } : {})
          const opt = new Optimizer(rt, model.params, {})
          await model.lossAndGrad({ tokens: randomTokens(T + 1, SHAPES[name].vocab, 2), rope: resolveRope(m.config.rope)(T) }, { grads: (n) => opt.grad(n) })
          await opt.step(1e-3)
          opt.dispose()
          model.dispose()
        })
        // the plan of the kernels this device runs (the cpu kernels' copies of weights and activations, or storage read in place)
        const train = mode === "full" ? { mode } as const : { mode, rank: 8, targets: lora.targets }
        const plan = llamaFamily.memory(m, T, withKernels({ train }, deviceBudget(rt)))
        expect(plan.total).toBeGreaterThanOrEqual(peak)
        expect(plan.total).toBeLessThanOrEqual(1.5 * peak)
      }, 900_000) // the first training step compiles its kernels cold: 460 s once on a loaded 2-core machine
    }
  }
})

test("scoring at several lengths (a search's fidelities, its penalty at L0) holds one length's buffers at a time: the plan at the longest holds them", async () => {
  const rt = await gpu()
  const m = llamaFamily.inspect(dirs.deep)
  const chunk = 256
  const model = await llamaFamily.load(rt, m)
  try {
    const peak = await peakOf(rt, async () => {
      for (const n of [1024, 2048, 1536]) await model.logprobs(randomTokens(n, SHAPES.deep.vocab, n), { rope: m.rope(n), chunk })
    })
    const plan = llamaFamily.memory(m, 2048, withKernels({ chunk }, deviceBudget(rt)))
    // (when the pool kept every length's pages and buffers, they peaked at 1.6× this on llvmpipe)
    expect(plan.kvCache + plan.activations).toBeGreaterThanOrEqual(peak)
  } finally {
    model.dispose()
  }
})

describe("fitting", () => {
  const m = llamaFamily.inspect(dirs.tied)
  const limits = { maxStorageBufferBindingSize: 128 * 2 ** 20, maxBufferSize: 2 ** 31 }

  test("the longest length that fits fits, one more does not; a budget below the weights fits nothing", () => {
    const budget = budgetOf(limits, true, { ROPEWAY_MEMORY: "64M" })
    const n = longestFit(llamaFamily, m, budget)
    expect(n).toBeGreaterThan(1000)
    expect(whyNotFits(llamaFamily.memory(m, n), budget)).toBeUndefined()
    expect(whyNotFits(llamaFamily.memory(m, n + 1), budget)).toBeDefined()
    expect(longestFit(llamaFamily, m, budgetOf(limits, true, { ROPEWAY_MEMORY: "1M" }))).toBe(0)
  })

  test("a refusal is one line: what is needed, what there is, the longest that fits", () => {
    const budget = budgetOf(limits, true, { ROPEWAY_MEMORY: "40M" })
    let msg = ""
    try {
      checkFits(llamaFamily, m, 1_000_000, budget)
    } catch (e) {
      expect((e as { _tag: string })._tag).toBe("DoesNotFit")
      msg = (e as Error).message
    }
    expect(msg).not.toContain("\n")
    expect(msg).toMatch(/does not fit at 1000000 tokens: needs [\d.]+ GiB \(weights .*KV cache .*\), ROPEWAY_MEMORY is 40\.0 MiB; the longest that fits is \d+ tokens/)
    // a per-buffer limit: the KV cache is paged (no layer's cache is one buffer), the embedding table is one
    expect(() => checkFits(llamaFamily, m, 100_000, { maxStorageBufferBindingSize: 2 ** 27, maxBufferSize: 2 ** 24 })).not.toThrow()
    // (an untied model's: a tied head is the only copy, in parts that fit)
    const wide = llamaFamily.inspect(dirs.wide)
    expect(() => checkFits(llamaFamily, wide, 1000, { maxStorageBufferBindingSize: 2 ** 27, maxBufferSize: 2 ** 17 })).toThrow(/the embedding table .* maxBufferSize/)
  })

  test("the plan counts the layouts of the kernels that run: the cpu kernels' texture copies and padded outputs hold more", () => {
    const at = (profile: "cpu" | "gpu") => llamaFamily.memory(m, 4096, { kernels: { profile, maxTextureDimension2D: 8192, ...limits } })
    const [cpu, gpuPlan] = [at("cpu"), at("gpu")]
    expect(cpu.kvCache).toBe(gpuPlan.kvCache)
    expect(cpu.weights).toBeGreaterThan(gpuPlan.weights) // textures' spare texels
    expect(cpu.activations).toBeGreaterThan(gpuPlan.activations)
    // with no kernels named, the cpu kernels' (the larger) at WebGPU's default limits
    expect(llamaFamily.memory(m, 4096)).toEqual(llamaFamily.memory(m, 4096, { kernels: { profile: "cpu", maxTextureDimension2D: 8192, maxStorageBufferBindingSize: 2 ** 27, maxBufferSize: 2 ** 28 } }))
    // a training step: the cpu matmul's copies of every weight and activation it reads, not the gpu one's
    const train = { mode: "lora", rank: 8, targets: ["q_proj", "v_proj"] } as const
    const step = (profile: "cpu" | "gpu") => llamaFamily.memory(m, 1024, { train, kernels: { profile, maxTextureDimension2D: 8192, ...limits } })
    const [cpuStep, gpuStep] = [step("cpu"), step("gpu")]
    expect([gpuStep.weights, gpuStep.gradients, gpuStep.optimizer]).toEqual([cpuStep.weights, cpuStep.gradients, cpuStep.optimizer])
    expect(cpuStep.activations).toBeGreaterThan(gpuStep.activations)
    expect(llamaFamily.memory(m, 1024, { train })).toEqual(cpuStep)
  })

  test("a GPU's memory is unknown unless stated; ROPEWAY_MEMORY takes K/M/G suffixes and refuses nonsense", () => {
    expect(budgetOf(limits, false, {}).memory).toBeUndefined()
    expect(budgetOf(limits, false, { ROPEWAY_MEMORY: "8G" }).memory!.bytes).toBe(8 * 2 ** 30)
    expect(parseMemory("512M")).toBe(512 * 2 ** 20)
    expect(parseMemory("1.5GiB")).toBe(1.5 * 2 ** 30)
    expect(parseMemory("12345")).toBe(12345)
    expect(() => parseMemory("lots")).toThrow(/ROPEWAY_MEMORY: expected a byte count/)
  })
})

describe("refused before loading", () => {
  test("score: one line, exit ≠ 0, naming need and availability", async () => {
    const tokens = join(root, "tokens.json")
    writeFileSync(tokens, JSON.stringify(randomTokens(2000, 3000, 4)))
    process.env.ROPEWAY_MEMORY = "2M"
    let r
    try {
      r = await runCli(["score", "--model", dirs.tied, "--tokens", tokens])
    } finally {
      delete process.env.ROPEWAY_MEMORY
    }
    const err = ownStderr(r.stderr)
    expect(r.code).not.toBe(0)
    expect(err.split("\n")).toHaveLength(1)
    expect(err).toContain(`error: ${dirs.tied}: does not fit at 2000 tokens: needs`)
    expect(err).toContain("ROPEWAY_MEMORY is 2.00 MiB; not even 1 token fits")
  })

  test("finetune: the plan of a training step is checked before any weight is read", async () => {
    const out = join(root, "ft")
    mkdirSync(out, { recursive: true })
    const notes: string[] = []
    process.env.ROPEWAY_MEMORY = "6M"
    let exit
    try {
      exit = await Effect.runPromiseExit(runFinetune({
        step: "finetune", params: { steps: 1, seqLen: 512, data: { tasks: { filler: 1 } }, lora: { rank: 4 } }, seed: 1, key: "k",
        inputs: { model: dirs.tied }, outputs: { model: join(out, "model") }, outDir: out, checkpointDir: join(out, "cp"),
        progress: { report: () => Effect.void, log: (l) => Effect.sync(() => void notes.push(l)) },
      }).pipe(Effect.provideService(Gpu, await gpu())))
    } finally {
      delete process.env.ROPEWAY_MEMORY
    }
    expect(Exit.isFailure(exit)).toBe(true)
    const msg = JSON.stringify(exit)
    expect(msg).toContain("DoesNotFit")
    expect(msg).toContain("does not fit training (LoRA) at 512 tokens")
  })

  test("inspect prints the plan, the limits and the longest length", async () => {
    const r = await runCli(["inspect", "--model", dirs.tied, "--length", "4096"])
    expect(r.code).toBe(0)
    for (const line of ["on disk      ", "plan         scoring 4096 tokens in chunks of 512", "  KV cache", "fits         yes", "longest      "]) expect(r.stdout).toContain(line)
    const j = await runCli(["inspect", "--model", dirs.tied, "--length", "1024", "--train", "lora", "--lora-targets", "q_proj,nope", "--json"])
    expect(j.code).not.toBe(0)
    expect(ownStderr(j.stderr)).toBe('error: --lora-targets: "nope" names no module LoRA can adapt; known: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj')
    const ok = await runCli(["inspect", "--model", dirs.tied, "--length", "1024", "--train", "full", "--json"])
    const parsed = JSON.parse(ok.stdout) as { plan: { gradients: number; optimizer: number }; fits: boolean; longest: number }
    expect(parsed.plan.optimizer).toBe(2 * parsed.plan.gradients)
    expect(parsed.fits).toBe(true)
    expect(parsed.longest).toBeGreaterThan(1024)
  })
})
