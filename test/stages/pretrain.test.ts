/**
 * The `pretrain` stage on tiny shapes: the loss falls on a repetitive corpus; a run interrupted after
 * step k (Fiber.interrupt, and a SIGKILL'd `bun run workflow` child) then re-run ends with exactly the
 * bytes of an uninterrupted run; bad data, a too-long seqLen and a checkpoint of another shape fail
 * before training, leaving earlier checkpoints intact.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { createHash } from "node:crypto"
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { type PretrainParams, runPretrain } from "../../stages/pretrain.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir } from "../models/random-model.ts"
import { type Ctx as KitCtx, killAtCheckpoint, runWorkflowIn, trainingContext } from "./training-kit.ts"

// generous: the first training step compiles its kernels, minutes on a cold shader cache of a loaded 2-core machine
const TIMEOUT = 180_000
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})
const tmp = (): string => {
  const d = tempDir("ropeway-pretrain-")
  dirs.push(d)
  return d
}

/** D 32, 2 layers, context 32, a repetitive corpus (the paper's five garbage sentences, cycled). */
const BASE: PretrainParams = {
  hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, context: 32, seqLen: 32,
  steps: 6, lr: 1e-2, warmup: 0, checkpointEvery: 2, data: { tasks: { filler: 1 }, filler: "paper" },
}

type Ctx = KitCtx<PretrainParams, never>

const context = (params: PretrainParams, checkpointDir = tmp(), onReport?: (note: string) => void): Ctx =>
  trainingContext("pretrain", params, {}, 11, tmp(), checkpointDir, onReport)

const run = async (c: Ctx) => Effect.runPromiseExit(runPretrain(c.ctx).pipe(Effect.provideService(Gpu, await gpu())))

const sha = (file: string): string => createHash("sha256").update(readFileSync(file)).digest("hex")

/** sha256 of every file under a folder, by relative path. */
function treeHashes(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (d: string, rel: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`)
      else out[`${rel}${e.name}`] = sha(join(d, e.name))
    }
  }
  walk(dir, "")
  return out
}

const errorOf = (exit: Exit.Exit<unknown, unknown>): string => {
  expect(Exit.isFailure(exit)).toBe(true)
  return String(JSON.stringify(exit))
}

let reference: Promise<{ hash: string; losses: number[] }> | undefined
/** The uninterrupted run of BASE, shared by the resume tests. */
const referenceRun = (): Promise<{ hash: string; losses: number[] }> =>
  (reference ??= (async () => {
    const c = context(BASE)
    const exit = await run(c)
    if (!Exit.isSuccess(exit)) throw new Error(`reference run failed: ${JSON.stringify(exit)}`)
    const losses = (JSON.parse(readFileSync(join(c.ctx.outputs.model, "ropeway_training.json"), "utf8")) as { losses: number[] }).losses
    return { hash: sha(join(c.ctx.outputs.model, "model.safetensors")), losses }
  })())

describe("pretrain", () => {
  test("the loss falls on a repetitive corpus; the output is an HF folder the llama plugin loads", async () => {
    const c = context(BASE)
    const exit = await run(c)
    expect(Exit.isSuccess(exit)).toBe(true)
    const result = (exit as Exit.Success<{ firstLoss: number; finalLoss: number }>).value
    const dir = c.ctx.outputs.model
    const losses = (JSON.parse(readFileSync(join(dir, "ropeway_training.json"), "utf8")) as { losses: number[] }).losses
    expect(losses.length).toBe(6)
    expect(losses[5]!).toBeLessThan(losses[0]! * 0.7)
    expect(result.finalLoss).toBe(losses[5]!)
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>
    expect(config["hidden_size"]).toBe(32)
    expect(config["max_position_embeddings"]).toBe(32)
    expect(config["vocab_size"]).toBe(258)
    expect(config["bos_token_id"]).toBe(256)
    const m = await loadLlama(await gpu(), dir)
    try {
      const lp = await m.logprobs([256, ...Array.from(new TextEncoder().encode("The grass is green. The sky"))])
      expect(lp.every((x) => Number.isFinite(x) && x <= 0)).toBe(true)
    } finally {
      m.dispose()
    }
    expect(c.notes.some((n) => /^step 6\/6, loss \d+\.\d+, \d+ tok\/s$/.test(n))).toBe(true) // the ETA is the reporter's
    // Same seed, same bytes: the reference run (another checkpoint folder) matches this one.
    expect((await referenceRun()).hash).toBe(sha(join(dir, "model.safetensors")))
  }, TIMEOUT)

  test("interrupted after step 3 (Fiber.interrupt) then re-run = uninterrupted, bitwise", async () => {
    const ref = await referenceRun()
    const cpDir = tmp()
    const stop = Effect.runSync(Deferred.make<void>())
    const c = context(BASE, cpDir, (note) => {
      if (note.startsWith("step 3/")) Effect.runSync(Deferred.succeed(stop, undefined))
    })
    const fiber = Effect.runFork(runPretrain(c.ctx).pipe(Effect.provideService(Gpu, await gpu())))
    await Effect.runPromise(Deferred.await(stop))
    await Effect.runPromise(Fiber.interrupt(fiber))
    expect(existsSync(join(c.ctx.outputs.model, "model.safetensors"))).toBe(false)
    const saved = readdirSync(join(cpDir, "training")).filter((n) => n.startsWith("step-"))
    expect(saved).toContain("step-00000002")
    expect(saved).not.toContain("step-00000006")

    const again = context(BASE, cpDir)
    const exit = await run(again)
    expect(Exit.isSuccess(exit)).toBe(true)
    expect(again.notes.some((n) => /resuming at step [24]\/6/.test(n))).toBe(true)
    expect(sha(join(again.ctx.outputs.model, "model.safetensors"))).toBe(ref.hash)
    const losses = (JSON.parse(readFileSync(join(again.ctx.outputs.model, "ropeway_training.json"), "utf8")) as { losses: number[] }).losses
    expect(losses).toEqual(ref.losses)
  }, TIMEOUT)

  test("a SIGKILL'd `bun run workflow` child, re-run, reaches the uninterrupted run's bytes", async () => {
    const dir = tmp()
    const file = join(dir, "pretrain.yaml")
    // Enough steps that the child is still training when its third checkpoint appears.
    writeFileSync(file, `
name: pretrain-kill
seed: 9
steps:
  pre:
    stage: pretrain
    params: { hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, context: 32, steps: 40, lr: 0.01, warmup: 2, checkpointEvery: 1, keepCheckpoints: 50, data: { tasks: { filler: 1 } } }
`)
    const killedStore = join(dir, "killed")
    const killedAt = await killAtCheckpoint(file, killedStore, 3, 45_000)
    expect(killedAt).toContain("step-00000003")
    expect(killedAt).not.toContain("step-00000040")
    expect(existsSync(join(killedStore, "_store"))).toBe(false) // nothing committed

    const rt = await gpu()
    const resumed = await runWorkflowIn(file, killedStore, rt)
    const fresh = await runWorkflowIn(file, join(dir, "fresh"), rt)
    const model = (r: typeof resumed) => join(r.manifest.steps[0]!.outputs["model"]!.path, "model.safetensors")
    const resumedAt = (resumed.manifest.steps[0]!.result as { resumedAt: number }).resumedAt
    expect(resumedAt).toBeGreaterThanOrEqual(3)
    expect((fresh.manifest.steps[0]!.result as { resumedAt: number }).resumedAt).toBe(0)
    expect(sha(model(resumed))).toBe(sha(model(fresh)))
  }, TIMEOUT)
})

describe("pretrain errors fail before training and leave earlier checkpoints intact", () => {
  test("empty corpus", async () => {
    const empty = tmp()
    const c = context({ ...BASE, data: { source: "corpus", path: empty } })
    const msg = errorOf(await run(c))
    expect(msg).toContain(empty)
    expect(msg).toContain("corpus is empty")
    expect(existsSync(c.ctx.outputs.model)).toBe(false)
  }, TIMEOUT)

  test("a JSONL line without the text field names file and line", async () => {
    const d = tmp()
    const f = join(d, "docs.jsonl")
    writeFileSync(f, `${JSON.stringify({ text: "one document" })}\n${JSON.stringify({ body: "no text here" })}\n`)
    const msg = errorOf(await run(context({ ...BASE, data: { source: "corpus", path: f } })))
    expect(msg).toContain(`${f}:2`)
    expect(msg).toContain("text must be a string")
  }, TIMEOUT)

  test("seqLen above the original context names the param", async () => {
    const msg = errorOf(await run(context({ ...BASE, seqLen: 64 })))
    expect(msg).toContain("pretrain.seqLen")
    expect(msg).toContain("max_position_embeddings 32")
  }, TIMEOUT)

  test("a checkpoint of another shape: clear error, the checkpoint untouched", async () => {
    const cpDir = tmp()
    const first = context({ ...BASE, steps: 2 }, cpDir)
    expect(Exit.isSuccess(await run(first))).toBe(true)
    const before = treeHashes(cpDir)
    expect(Object.keys(before).some((k) => k.endsWith("model.safetensors"))).toBe(true)
    const c = context({ ...BASE, steps: 4, hidden: 64, heads: 4, kvHeads: 2 }, cpDir)
    const msg = errorOf(await run(c))
    expect(msg).toContain("checkpoint from another architecture")
    expect(msg).toContain("architecture.hidden is 32 in the checkpoint, expected 64")
    expect(treeHashes(cpDir)).toEqual(before)
    expect(existsSync(c.ctx.outputs.model)).toBe(false)
  }, TIMEOUT)
})
