/**
 * `finetune` with `lora:` on a tiny bf16 model: the output folder is the base's weights (linked) with the
 * adapter beside them in PEFT's layout; checkpoints and optimizer state hold only what trains; the folder,
 * its merged export and the adapters applied at run time (unmerged) score alike; an interrupted run and a
 * SIGKILL'd workflow resume to the uninterrupted run's bytes; LoRA dropout's gradient is the derivative of
 * the loss under the same masks; a bad target fails before the GPU is touched.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { createHash } from "node:crypto"
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import type { GpuRuntime } from "../../kernels/runtime.ts"
import { fill } from "../../kernels/scale.ts"
import type { Tensor } from "../../kernels/tensor.ts"
import { runExport } from "../../plugins/export/run.ts"
import { readLlamaConfig } from "../../plugins/models/llama/config.ts"
import { llamaFamily } from "../../plugins/models/llama/family.ts"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { randomTokens } from "../../plugins/models/llama/model.ref.ts"
import { writeRandomLlama } from "../../plugins/models/llama/random.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { type FinetuneParams, runFinetune } from "../../stages/finetune.ts"
import { Checkpoint, SafetensorsFile } from "../../common/safetensors.ts"
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, readPeftAdapter } from "../../training/peft.ts"
import type { LoraSpec, TrainableModel } from "../../training/model.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir } from "../models/random-model.ts"
import { type Ctx as KitCtx, killAtCheckpoint, ROOT, runWorkflowIn, trainingContext } from "./training-kit.ts"

const TIMEOUT = 120_000
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})
const tmp = (): string => {
  const d = tempDir("ropeway-lora-")
  dirs.push(d)
  return d
}

const L0 = 64
const SHAPE = { vocab: 258, hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, maxPositions: L0, bosTokenId: 256, eosTokenId: 257 }
const modelDir = tmp()
writeRandomLlama(modelDir, { ...SHAPE, seed: 3 }, { dtype: "BF16" })

const LORA = { rank: 4, alpha: 8, dropout: 0.1, targets: ["q_proj", "v_proj", "down_proj"] as [string, ...string[]], trainNorms: true }
const BASE: FinetuneParams = { steps: 4, seqLen: 64, lr: 1e-2, warmup: 1, checkpointEvery: 2, data: { tasks: { filler: 1 } }, lora: LORA }

type Ctx = KitCtx<FinetuneParams, string>

const context = (params: FinetuneParams, checkpointDir = tmp(), onReport?: (note: string) => void): Ctx =>
  trainingContext("finetune", params, { model: modelDir }, 5, tmp(), checkpointDir, onReport)

const run = async (c: Ctx, rt?: GpuRuntime) => Effect.runPromiseExit(runFinetune(c.ctx).pipe(Effect.provideService(Gpu, rt ?? (await gpu()))))
const sha = (file: string): string => createHash("sha256").update(readFileSync(file)).digest("hex")
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!))
  return m
}

/** One finished run, shared by the tests that only read its output. */
let trained: Ctx | undefined
const trainedRun = async (): Promise<Ctx> => {
  if (trained !== undefined) return trained
  const c = context(BASE)
  const exit = await run(c)
  if (!Exit.isSuccess(exit)) throw new Error(JSON.stringify(exit))
  return (trained = c)
}

/** The trainable model with the adapters of `dir` at run time (unmerged): the base folder plus the adapter's values. */
async function unmerged(rt: GpuRuntime, dir: string): Promise<TrainableModel> {
  const config = readLlamaConfig(modelDir)
  const spec: LoraSpec = { ...LORA, seed: 0 }
  const model = llamaFamily.trainable!(rt, config, modelDir, { lora: spec })
  const file = SafetensorsFile.open(join(dir, ADAPTER_WEIGHTS))
  for (const p of model.params) rt.write(p.value, file.read(`base_model.model.${p.name}`))
  return model
}

describe("LoRA fine-tuning", () => {
  test("output: the base's weight files linked and the adapter in PEFT's layout; checkpoints hold only what trains", async () => {
    const c = await trainedRun()
    const out = c.ctx.outputs.model
    expect(statSync(join(out, "model.safetensors")).ino).toBe(statSync(join(modelDir, "model.safetensors")).ino)
    const cfg = JSON.parse(readFileSync(join(out, ADAPTER_CONFIG), "utf8")) as Record<string, unknown>
    expect(cfg).toMatchObject({ peft_type: "LORA", r: 4, lora_alpha: 8, lora_dropout: 0.1, target_modules: LORA.targets, bias: "none", task_type: "CAUSAL_LM" })
    expect(cfg["modules_to_save"]).toEqual(["input_layernorm", "post_attention_layernorm", "norm"])
    const names = [...SafetensorsFile.open(join(out, ADAPTER_WEIGHTS)).tensors.keys()]
    expect(names.every((n) => n.startsWith("base_model.model.model."))).toBe(true)
    expect(names.filter((n) => n.includes(".lora_")).length).toBe(2 * LORA.targets.length * SHAPE.layers)
    expect(names).toContain("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")
    expect(names).toContain("base_model.model.model.norm.weight")
    const b = SafetensorsFile.open(join(out, ADAPTER_WEIGHTS)).read("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
    expect(b.some((x) => x !== 0)).toBe(true) // B starts at 0: it trained

    const steps = readdirSync(join(c.ctx.checkpointDir, "training")).filter((n) => n.startsWith("step-"))
    expect(steps).toContain("step-00000004")
    const step = join(c.ctx.checkpointDir, "training", "step-00000004")
    const saved = [...SafetensorsFile.open(join(step, "model.safetensors")).tensors.keys()].sort()
    expect(saved).toEqual(names.map((n) => n.slice("base_model.model.".length)).sort())
    const moments = [...SafetensorsFile.open(join(step, "optimizer.safetensors")).tensors.keys()]
    expect(moments.length).toBe(2 * saved.length)
    expect(moments.some((n) => n.includes("q_proj.weight") || n.includes("embed_tokens"))).toBe(false)
  }, TIMEOUT)

  test("the adapters at run time (unmerged), the folder as loaded and its merged export score within 1e-4", async () => {
    const rt = await gpu()
    const c = await trainedRun()
    const out = c.ctx.outputs.model
    const exp = join(tmp(), "export")
    const checks = await runExport(rt, { model: out, out: exp, formats: ["hf", "peft"], llamacpp: false })
    expect(checks.ok).toBe(true)
    const hf = join(exp, "hf")
    expect(existsSync(join(hf, ADAPTER_CONFIG))).toBe(false)
    const merged = Checkpoint.open(hf)
    expect(merged.get("model.layers.0.self_attn.q_proj.weight")!.dtype).toBe("F32") // adapted
    expect(merged.get("model.layers.0.self_attn.k_proj.weight")!.dtype).toBe("BF16") // untouched, as stored
    expect(merged.get("model.norm.weight")!.dtype).toBe("F32") // trained whole
    expect(readPeftAdapter(join(exp, "peft"))!.tensors.size).toBe(readPeftAdapter(out)!.tensors.size)

    const tokens = randomTokens(L0 + 1, SHAPE.vocab, 17)
    const table = resolveRope(readLlamaConfig(out).rope)(tokens.length)
    const adapters = await unmerged(rt, out)
    const base = await loadLlama(rt, modelDir)
    const folder = await loadLlama(rt, out)
    const mergedModel = await loadLlama(rt, hf)
    try {
      const a = (await adapters.lossAndGrad({ tokens, rope: table })).logprobs!
      // f32 KV caches: training attends in f32, so a bf16 cache would differ by its rounding alone
      const f = await folder.logprobs(tokens, { rope: table, kvCache: "f32" })
      const m = await mergedModel.logprobs(tokens, { rope: table, kvCache: "f32" })
      const b0 = await base.logprobs(tokens, { rope: table, kvCache: "f32" })
      console.log(`unmerged vs folder ${maxAbs(a, f).toExponential(2)}, vs merged export ${maxAbs(a, m).toExponential(2)}; the adapter moves log p by ${maxAbs(a, b0).toExponential(2)}`)
      expect(maxAbs(a, f)).toBeLessThan(1e-4)
      expect(maxAbs(a, m)).toBeLessThan(1e-4)
      expect(maxAbs(a, b0)).toBeGreaterThan(1e-3) // the comparison could fail: the adapter changed the model
    } finally {
      adapters.dispose()
      base.dispose()
      folder.dispose()
      mergedModel.dispose()
    }
  }, TIMEOUT)

  test("interrupted after step 2, re-run = uninterrupted, bitwise (adapter and losses)", async () => {
    const ref = await trainedRun()
    const cpDir = tmp()
    const stop = Effect.runSync(Deferred.make<void>())
    const c = context({ ...BASE, checkpointEvery: 1 }, cpDir, (note) => {
      if (note.startsWith("step 2/")) Effect.runSync(Deferred.succeed(stop, undefined))
    })
    const fiber = Effect.runFork(runFinetune(c.ctx).pipe(Effect.provideService(Gpu, await gpu())))
    await Effect.runPromise(Deferred.await(stop))
    await Effect.runPromise(Fiber.interrupt(fiber))
    expect(existsSync(join(c.ctx.outputs.model, ADAPTER_WEIGHTS))).toBe(false)
    const again = context({ ...BASE, checkpointEvery: 1 }, cpDir)
    expect(Exit.isSuccess(await run(again))).toBe(true)
    expect(again.notes.some((n) => /resuming at step [23]\/4/.test(n))).toBe(true)
    expect(sha(join(again.ctx.outputs.model, ADAPTER_WEIGHTS))).toBe(sha(join(ref.ctx.outputs.model, ADAPTER_WEIGHTS)))
  }, TIMEOUT)

  test("LoRA dropout: the gradient is the derivative of the loss under the same masks", async () => {
    const rt = await gpu()
    const config = readLlamaConfig(modelDir)
    const model = llamaFamily.trainable!(rt, config, modelDir, { lora: { ...LORA, dropout: 0.5, seed: 2 } })
    const grads = new Map<string, Tensor>()
    try {
      // B away from 0 so every adapter's gradient is non-trivial
      for (const p of model.params) {
        const n = p.value.shape.reduce((a, b) => a * b, 1)
        if (p.name.endsWith("lora_B.weight")) rt.write(p.value, Float32Array.from({ length: n }, (_, i) => Math.fround(Math.sin(i) * 0.2)))
        const g = rt.tensor(p.value.shape)
        fill(rt, g, 0)
        grads.set(p.name, g)
      }
      const tokens = randomTokens(40, SHAPE.vocab, 3)
      const batch = { tokens, rope: resolveRope(config.rope)(40), dropoutSeed: 1234 }
      const base = (await model.lossAndGrad(batch, { grads: (n) => grads.get(n) })).loss
      // a direction over every adapter: v = sign pattern; the directional derivative g·v against a central difference
      const values = new Map<string, Float32Array>()
      for (const p of model.params) values.set(p.name, await rt.read(p.value))
      let gv = 0
      const dirOf = (name: string, i: number) => (((i * 7 + name.length) % 3) - 1) * (name.includes("lora_") ? 1 : 0)
      for (const p of model.params) {
        const g = await rt.read(grads.get(p.name)!)
        for (let i = 0; i < g.length; i++) gv += g[i]! * dirOf(p.name, i)
      }
      const lossAt = async (eps: number): Promise<number> => {
        for (const p of model.params) rt.write(p.value, values.get(p.name)!.map((x, i) => x + eps * dirOf(p.name, i)))
        // with a gradient sink (that takes nothing) the forward drops as in training
        return (await model.lossAndGrad(batch, { grads: () => undefined })).loss
      }
      // central differences converge as eps² here (1e-2: 8e-3 off, 3e-3: 7e-4, 1e-3: 5e-5)
      const eps = 2e-3
      const fd = ((await lossAt(eps)) - (await lossAt(-eps))) / (2 * eps)
      await lossAt(0)
      const again = (await model.lossAndGrad(batch, { grads: () => undefined })).loss
      expect(again).toBe(base) // same seed, same masks
      const other = (await model.lossAndGrad({ ...batch, dropoutSeed: 99 }, { grads: () => undefined })).loss
      expect(other).not.toBe(base)
      console.log(`LoRA dropout 0.5: g·v ${gv.toExponential(4)}, central difference ${fd.toExponential(4)}`)
      expect(Math.abs(gv)).toBeGreaterThan(1e-3)
      expect(Math.abs(fd - gv) / Math.abs(gv)).toBeLessThan(2e-3)
    } finally {
      rt.release(...grads.values())
      model.dispose()
    }
  }, TIMEOUT)
})

describe("LoRA errors, before anything is loaded", () => {
  /** A runtime whose every use throws: the stage must fail before it touches the GPU. */
  const untouchable = new Proxy({} as GpuRuntime, { get: (_, key) => { throw new Error(`the GPU was used (${String(key)})`) } })

  test("a target that names no module: its name and the known ones", async () => {
    const c = context({ ...BASE, lora: { ...LORA, targets: ["q_proj", "qq_proj"] } })
    const exit = await run(c, untouchable)
    expect(Exit.isFailure(exit)).toBe(true)
    const msg = JSON.stringify(exit)
    expect(msg).toContain("finetune.lora.targets")
    expect(msg).toContain('\\"qq_proj\\" names no module')
    expect(msg).toContain("known: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")
    expect(msg).not.toContain("the GPU was used")
  })

  test("a folder that already carries an adapter is refused (merge it first)", async () => {
    const c = await trainedRun()
    const again = context({ ...BASE })
    const ctx = { ...again, ctx: { ...again.ctx, inputs: { model: c.ctx.outputs.model } } }
    const msg = JSON.stringify(await run(ctx, untouchable))
    expect(msg).toContain("already carries a LoRA adapter")
    expect(msg).not.toContain("the GPU was used")
  }, TIMEOUT)
})

describe("LoRA from a workflow file", () => {
  const workflow = (dir: string, targets: string) => {
    const file = join(dir, "lora.yaml")
    writeFileSync(file, `
name: lora-kill
seed: 9
model: ${modelDir}
steps:
  tune:
    stage: finetune
    inputs: { model: model }
    params:
      seqLen: 64
      steps: 30
      lr: 0.01
      warmup: 2
      checkpointEvery: 1
      keepCheckpoints: 50
      data: { tasks: { filler: 1 } }
      lora: { rank: 4, alpha: 8, dropout: 0.1, targets: ${targets}, trainNorms: true }
`)
    return file
  }

  test("a bad target: one line, exit ≠ 0", async () => {
    const dir = tmp()
    const p = Bun.spawn([join(ROOT, "node_modules", ".bin", "bun"), "cli/main.ts", "run", workflow(dir, "[q_proj, attn]"), "--store", join(dir, "store"), "--quiet"], {
      cwd: ROOT, env: { ...process.env, EGL_PLATFORM: "surfaceless" }, stdout: "pipe", stderr: "pipe",
    })
    const [stderr, code] = await Promise.all([new Response(p.stderr).text(), p.exited])
    const lines = stderr.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("Warning: max"))
    expect(code).not.toBe(0)
    expect(lines.filter((l) => l.startsWith("error: "))).toHaveLength(1)
    expect(lines.join("\n")).toContain('"attn" names no module')
  }, TIMEOUT)

  test("a SIGKILL'd run, re-run, reaches the uninterrupted run's adapter bytes", async () => {
    const dir = tmp()
    const file = workflow(dir, "[q_proj, v_proj, down_proj]")
    const killedStore = join(dir, "killed")
    const killedAt = await killAtCheckpoint(file, killedStore, 3, 60_000)
    expect(killedAt).toContain("step-00000003")
    expect(killedAt).not.toContain("step-00000030")

    const rt = await gpu()
    const resumed = await runWorkflowIn(file, killedStore, rt)
    const fresh = await runWorkflowIn(file, join(dir, "fresh"), rt)
    const adapter = (r: typeof resumed) => join(r.manifest.steps[0]!.outputs["model"]!.path, ADAPTER_WEIGHTS)
    expect((resumed.manifest.steps[0]!.result as { resumedAt: number }).resumedAt).toBeGreaterThanOrEqual(3)
    expect((fresh.manifest.steps[0]!.result as { resumedAt: number }).resumedAt).toBe(0)
    expect(sha(adapter(resumed))).toBe(sha(adapter(fresh)))
  }, TIMEOUT)
})
