/**
 * The `finetune` / `finetune-factors` stages on a tiny random model (D 32, 2 layers, original context 32):
 * config.json carries the scaling trained with (factor set as longrope-research or HF longrope, or a
 * given rope_scaling); the mixed context window's per-document grouping equals scoring each document
 * on its own; an interrupted run resumes to the same bytes; bad inputs fail before training.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import type { RopeTable } from "../../kernels/rope-table.ts"
import { readLlamaConfig } from "../../plugins/models/llama/config.ts"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { writeRandomLlama } from "../../plugins/models/llama/random.ts"
import { createTrainableLlama } from "../../plugins/models/llama/train.ts"
import { yarnInitFactors } from "../../plugins/rope/factors.ts"
import { type FactorSetFile, formatFactorSetFile } from "../../plugins/rope/formats.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { FinetuneParams, runFinetune } from "../../stages/finetune.ts"
import { Rng } from "../../common/rng.ts"
import { decodeParams } from "../../common/schema.ts"
import { documentSpans, sequenceCalls, skipPositions } from "../../training/sequences.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir } from "../models/random-model.ts"
import { type Ctx as KitCtx, trainingContext } from "./training-kit.ts"

// generous: the first training step compiles its kernels, minutes on a cold shader cache of a loaded 2-core machine
const TIMEOUT = 180_000
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})
const tmp = (): string => {
  const d = tempDir("ropeway-finetune-")
  dirs.push(d)
  return d
}

const L0 = 32
const SHAPE = { vocab: 258, hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, maxPositions: L0, bosTokenId: 256, eosTokenId: 257 }
const modelDir = tmp()
writeRandomLlama(modelDir, { ...SHAPE, seed: 3 })

const LONG = Array.from(yarnInitFactors({ rotaryDim: 16, base: 10000, originalLength: L0 }, 4))
const factorSet: FactorSetFile = {
  format: "ropeway-factor-set",
  version: 1,
  model: { rotary_dim: 16, base: 10000, original_max_position_embeddings: L0, num_hidden_layers: 2 },
  sets: [
    { max_length: L0, factors: new Array<number>(8).fill(1) },
    { max_length: 4 * L0, factors: LONG, mscale: "su" },
  ],
  provenance: { method: "yarn-init", run_id: null, lengths: [4 * L0], scale: 4, created: "2026-01-01T00:00:00Z" },
}
const factorsFile = join(tmp(), "rope.json")
writeFileSync(factorsFile, formatFactorSetFile(factorSet))

const FILLER = { tasks: { filler: 1 } }
const BASE: FinetuneParams = { steps: 4, seqLen: 64, lr: 1e-3, warmup: 1, checkpointEvery: 2, data: FILLER }

type Ctx = KitCtx<FinetuneParams, string>

const context = (params: FinetuneParams, inputs: Record<string, string>, checkpointDir = tmp(), onReport?: (note: string) => void): Ctx =>
  trainingContext("finetune", params, inputs, 5, tmp(), checkpointDir, onReport)

const run = async (c: Ctx) => Effect.runPromiseExit(runFinetune(c.ctx).pipe(Effect.provideService(Gpu, await gpu())))
const sha = (file: string): string => createHash("sha256").update(readFileSync(file)).digest("hex")
const configOf = (c: Ctx) => JSON.parse(readFileSync(join(c.ctx.outputs.model, "config.json"), "utf8")) as Record<string, unknown>
const errorOf = (exit: Exit.Exit<unknown, unknown>): string => {
  expect(Exit.isFailure(exit)).toBe(true)
  return String(JSON.stringify(exit))
}

describe("finetune writes the scaling it trained with", () => {
  test("a factor set → longrope-research; the folder loads and scores at 4×", async () => {
    const c = context(BASE, { model: modelDir, factors: factorsFile })
    const exit = await run(c)
    expect(Exit.isSuccess(exit)).toBe(true)
    const config = configOf(c)
    const rs = config["rope_scaling"] as Record<string, unknown>
    expect(rs["rope_type"]).toBe("longrope-research")
    expect(rs["original_max_position_embeddings"]).toBe(L0)
    expect((rs["sets"] as { max_length: number }[]).map((s) => s.max_length)).toEqual([L0, 4 * L0])
    expect((rs["sets"] as { factors: number[] }[])[1]!.factors).toEqual(LONG)
    expect(config["max_position_embeddings"]).toBe(4 * L0)
    expect(config["hidden_size"]).toBe(32)
    expect(sha(join(c.ctx.outputs.model, "model.safetensors"))).not.toBe(sha(join(modelDir, "model.safetensors")))
    const m = await loadLlama(await gpu(), c.ctx.outputs.model)
    try {
      const lp = await m.logprobs(Array.from({ length: 4 * L0 }, (_, i) => (i === 0 ? 256 : 97 + (i % 26))))
      expect(lp.every((x) => Number.isFinite(x))).toBe(true)
    } finally {
      m.dispose()
    }
    const training = JSON.parse(readFileSync(join(c.ctx.outputs.model, "ropeway_training.json"), "utf8")) as { losses: number[]; rope: string }
    expect(training.losses.length).toBe(4)
    // named, not located: the record's bytes must not depend on where the factors file (a store) is
    expect(training.rope).toMatch(/^the factors input/)
    expect(JSON.stringify(training)).not.toContain(dirname(factorsFile))
  }, TIMEOUT)

  test("scalingFormat longrope → HF longrope short/long factors", async () => {
    const c = context({ ...BASE, steps: 1, scalingFormat: "longrope" }, { model: modelDir, factors: factorsFile })
    expect(Exit.isSuccess(await run(c))).toBe(true)
    const rs = configOf(c)["rope_scaling"] as Record<string, unknown>
    expect(rs["rope_type"]).toBe("longrope")
    expect(rs["short_factor"]).toEqual(new Array<number>(8).fill(1))
    expect(rs["long_factor"]).toEqual(LONG)
    expect(rs["original_max_position_embeddings"]).toBe(L0)
    expect(configOf(c)["max_position_embeddings"]).toBe(4 * L0)
    expect(readLlamaConfig(c.ctx.outputs.model).rope.scaling?.["rope_type"]).toBe("longrope")
  }, TIMEOUT)

  test("ropeScaling (YaRN) → written with its original length; max_position_embeddings covers seqLen", async () => {
    const c = context({ ...BASE, steps: 1, ropeScaling: { rope_type: "yarn", factor: 2 } }, { model: modelDir })
    expect(Exit.isSuccess(await run(c))).toBe(true)
    const config = configOf(c)
    expect(config["rope_scaling"]).toEqual({ rope_type: "yarn", factor: 2, original_max_position_embeddings: L0 })
    expect(config["max_position_embeddings"]).toBe(2 * L0)
  }, TIMEOUT)

  test("ropeScaling {} (plain RoPE) on a scaled model → rope_scaling null", async () => {
    const scaled = tmp()
    writeRandomLlama(scaled, { ...SHAPE, seed: 3 })
    const cfgFile = join(scaled, "config.json")
    writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(readFileSync(cfgFile, "utf8")), rope_scaling: { rope_type: "linear", factor: 2 }, max_position_embeddings: 2 * L0 }))
    const c = context({ ...BASE, steps: 1, seqLen: L0, ropeScaling: {} }, { model: scaled })
    expect(Exit.isSuccess(await run(c))).toBe(true)
    expect(configOf(c)["rope_scaling"]).toBe(null)
  }, TIMEOUT)
})

describe("mixed context window", () => {
  test("documents grouped by factor set; cross-document targets unscored", () => {
    const tokens = Int32Array.from({ length: 17 }, (_, i) => i)
    const positions = Int32Array.from([0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    const table = (f: number): RopeTable => ({ rotaryDim: 2, invFreq: Float64Array.of(f), originalInvFreq: Float64Array.of(1), startTokens: 0, attentionScale: 1 })
    // Two distinct objects per set (as a method may return), grouped by their numbers.
    const S = table(1), Lg = table(0.5)
    const tableFor = (n: number): RopeTable => (n <= 4 ? (n % 2 === 0 ? S : table(1)) : Lg)
    const calls = sequenceCalls(tokens, positions, [5, 3, 9], true, tableFor)
    expect(calls.length).toBe(2)
    const [a, b] = calls
    expect(a!.rope).toBe(Lg)
    expect(Array.from(a!.inputs)).toEqual([0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15])
    expect(Array.from(a!.targets)).toEqual([1, 2, 3, 4, 5, 9, 10, 11, 12, 13, 14, 15, 16])
    expect(Array.from(a!.positions!)).toEqual([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7])
    expect(Array.from(a!.segments!)).toEqual([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    expect(Array.from(a!.labelMask!)).toEqual([1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1]) // the cut last document continues: scored
    expect(a!.scored).toBe(12)
    expect(b!.rope.invFreq).toEqual(S.invFreq)
    expect(Array.from(b!.inputs)).toEqual([5, 6, 7])
    expect(Array.from(b!.labelMask!)).toEqual([1, 1, 0])
    const cont = sequenceCalls(tokens, positions, [5, 3, 9], false, (n) => (n <= 4 ? S : Lg))
    expect(cont.length).toBe(1)
    expect(cont[0]!.rope).toBe(Lg)
    expect(cont[0]!.scored).toBe(16)
  })

  test("a grouped call scores each document as if it were alone", async () => {
    const rt = await gpu()
    const config = readLlamaConfig(modelDir, { ropeScaling: { rope_type: "longrope-research", original_max_position_embeddings: L0, sets: factorSet.sets } })
    const table = resolveRope(config.rope)
    const m = createTrainableLlama(rt, config, modelDir)
    try {
      const docs = [40, 20, 6, 35] // long, short, short, long (≤ 32 is short)
      const T = docs.reduce((s, x) => s + x, 0)
      const tokens = Int32Array.from({ length: T + 1 }, (_, i) => 32 + ((i * 7) % 90))
      const positions = new Int32Array(T + 1)
      let at = 0
      for (const d of docs) for (let k = 0; k < d; k++) positions[at++] = k
      positions[T] = 0
      const calls = sequenceCalls(tokens, positions, [...docs, 1], true, table)
      expect(calls.length).toBe(2)
      let grouped = 0
      for (const c of calls) {
        const r = await m.lossAndGrad({ inputs: c.inputs, targets: c.targets, positions: c.positions!, segments: c.segments!, labelMask: c.labelMask!, rope: c.rope })
        grouped += r.loss * c.scored
      }
      let alone = 0
      at = 0
      for (const d of docs) {
        const r = await m.lossAndGrad({ inputs: tokens.subarray(at, at + d - 1), targets: tokens.subarray(at + 1, at + d), rope: table(d) })
        alone += r.loss * (d - 1)
        at += d
      }
      expect(Math.abs(grouped - alone) / Math.abs(alone)).toBeLessThan(1e-5)
    } finally {
      m.dispose()
    }
  }, TIMEOUT)

  test.each([
    ["", {}],
    [" (with position skips)", { positionSkip: { length: 256, chunks: 3 } }],
  ] as const)("mixed fine-tune%s interrupted after step 2 then re-run = uninterrupted, bitwise", async (_, extra) => {
    const params: FinetuneParams = { ...BASE, ...extra, mixedContext: true, checkpointEvery: 1, data: { ...FILLER, docLength: [6, 60] } }
    const inputs = { model: modelDir, factors: factorsFile }
    const ref = context(params, inputs)
    expect(Exit.isSuccess(await run(ref))).toBe(true)
    const cpDir = tmp()
    const stop = Effect.runSync(Deferred.make<void>())
    const c = context(params, inputs, cpDir, (note) => {
      if (note.startsWith("step 2/")) Effect.runSync(Deferred.succeed(stop, undefined))
    })
    const fiber = Effect.runFork(runFinetune(c.ctx).pipe(Effect.provideService(Gpu, await gpu())))
    await Effect.runPromise(Deferred.await(stop))
    await Effect.runPromise(Fiber.interrupt(fiber))
    expect(existsSync(join(c.ctx.outputs.model, "model.safetensors"))).toBe(false)
    const again = context(params, inputs, cpDir)
    expect(Exit.isSuccess(await run(again))).toBe(true)
    expect(again.notes.some((n) => /resuming at step [23]\/4/.test(n))).toBe(true)
    expect(sha(join(again.ctx.outputs.model, "model.safetensors"))).toBe(sha(join(ref.ctx.outputs.model, "model.safetensors")))
  }, TIMEOUT)
})

describe("position skips (PoSE)", () => {
  const spans = [{ from: 0, to: 40, endsInside: true }, { from: 40, to: 45, endsInside: true }, { from: 45, to: 100, endsInside: false }]
  const restart = (): Int32Array => {
    const p = new Int32Array(100)
    for (const s of spans) for (let t = s.from; t < s.to; t++) p[t] = t - s.from
    return p
  }

  test("pieces keep their order and spacing; position 0 stays; the last position reaches the length, never past it", () => {
    const length = 1000
    const rng = Rng.seeded(1)
    const lasts: number[] = []
    for (let draw = 0; draw < 300; draw++) {
      const p = restart()
      skipPositions(p, spans, { length, chunks: 3 }, rng)
      for (const s of spans) {
        expect(p[s.from]).toBe(0)
        let jumps = 0
        for (let t = s.from + 1; t < s.to; t++) {
          expect(p[t]!).toBeGreaterThan(p[t - 1]!)
          if (p[t]! - p[t - 1]! > 1) jumps++
        }
        expect(jumps).toBeLessThanOrEqual(2)
        expect(p[s.to - 1]!).toBeLessThanOrEqual(length - 1)
      }
      lasts.push(p[99]!)
    }
    // the 55-token document's end ranges over [54, 999]: both far ends are reached
    expect(Math.max(...lasts)).toBeGreaterThan(950)
    expect(Math.min(...lasts)).toBeLessThan(200)
    // deterministic in the generator
    const a = restart(), b = restart()
    skipPositions(a, spans, { length }, Rng.seeded(7))
    skipPositions(b, spans, { length }, Rng.seeded(7))
    expect(Array.from(a)).toEqual(Array.from(b))
  })

  test("a document already as long as the length is left alone; spans of a sequence", () => {
    const p = restart()
    skipPositions(p, spans, { length: 40 }, Rng.seeded(2))
    expect(Array.from(p.subarray(0, 40))).toEqual(Array.from({ length: 40 }, (_, i) => i))
    expect(documentSpans([40, 5, 70], 100, true)).toEqual(spans)
    expect(documentSpans([40, 5, 70], 100, false)).toEqual([{ from: 0, to: 100, endsInside: false }])
  })

  test("each document takes the table for its last position + 1; a skipped continuous sequence passes its positions", () => {
    const tokens = Int32Array.from({ length: 9 }, (_, i) => i)
    const positions = Int32Array.from([0, 1, 30, 31, 0, 1, 2, 3, 0])
    const seen: number[] = []
    const t = (n: number): RopeTable => {
      seen.push(n)
      return { rotaryDim: 2, invFreq: Float64Array.of(1 / n), originalInvFreq: Float64Array.of(1), startTokens: 0, attentionScale: 1 }
    }
    const calls = sequenceCalls(tokens, positions, [4, 5], true, t)
    expect(seen).toEqual([32, 4])
    expect(calls.length).toBe(2)
    expect(Array.from(calls[0]!.positions!)).toEqual([0, 1, 30, 31])
    seen.length = 0
    const cont = sequenceCalls(tokens, Int32Array.from([0, 1, 2, 9, 10, 11, 12, 13, 14]), [9], false, t)
    expect(seen).toEqual([14])
    expect(Array.from(cont[0]!.positions!)).toEqual([0, 1, 2, 9, 10, 11, 12, 13])
    expect(sequenceCalls(tokens, Int32Array.from({ length: 9 }, (_, i) => i), [9], false, t)[0]!.positions).toBeUndefined()
  })

  test("a fine-tune with position skips trains on other positions (its weights differ)", async () => {
    const inputs = { model: modelDir, factors: factorsFile }
    const params: FinetuneParams = { ...BASE, steps: 2, mixedContext: true, data: { ...FILLER, docLength: [6, 60] } }
    const plain = context(params, inputs), skipped = context({ ...params, positionSkip: { length: 128 } }, inputs)
    expect(Exit.isSuccess(await run(plain))).toBe(true)
    expect(Exit.isSuccess(await run(skipped))).toBe(true)
    expect(sha(join(skipped.ctx.outputs.model, "model.safetensors"))).not.toBe(sha(join(plain.ctx.outputs.model, "model.safetensors")))
  }, TIMEOUT)

  test("positionSkip.length must exceed seqLen; data.keys is uniform or digits", async () => {
    const c = context({ ...BASE, positionSkip: { length: 64 } }, { model: modelDir, factors: factorsFile })
    expect(errorOf(await run(c))).toContain("finetune.positionSkip.length: expected more than seqLen (64) positions, got 64")
    // data's shape is its schema's (checked when a workflow is loaded): keys is uniform or digits
    expect(() => decodeParams(FinetuneParams, { ...BASE, data: { ...FILLER, keys: "five" } }, "finetune")).toThrow('finetune.data.keys: Expected "uniform" | "digits", got "five"')
  }, TIMEOUT)
})

describe("finetune errors fail before training and leave earlier checkpoints intact", () => {
  test("seqLen above what the RoPE table covers names the param", async () => {
    const c = context({ ...BASE, seqLen: 64 }, { model: modelDir })
    const msg = errorOf(await run(c))
    expect(msg).toContain("finetune.seqLen")
    expect(msg).toContain("plain RoPE")
    expect(existsSync(c.ctx.outputs.model)).toBe(false)
    // A factor set covering 128 accepts 128 but not 129.
    expect(errorOf(await run(context({ ...BASE, seqLen: 129 }, { model: modelDir, factors: factorsFile })))).toContain("max_length 128")
  }, TIMEOUT)

  test("empty corpus and a JSONL line without the text field", async () => {
    const d = tmp()
    const empty = join(d, "empty")
    mkdirSync(empty)
    expect(errorOf(await run(context({ ...BASE, seqLen: 32, data: { source: "corpus", path: empty } }, { model: modelDir })))).toContain("corpus is empty")
    const f = join(d, "docs.jsonl")
    writeFileSync(f, `${JSON.stringify({ text: "ok" })}\n\n${JSON.stringify({ content: "x" })}\n`)
    const msg = errorOf(await run(context({ ...BASE, seqLen: 32, data: { source: "corpus", path: f, field: "text" } }, { model: modelDir })))
    expect(msg).toContain(`${f}:3`)
  }, TIMEOUT)

  test("resumeFrom a checkpoint of another architecture: clear error, checkpoint untouched", async () => {
    const cpA = tmp()
    const a = context({ ...BASE, seqLen: 32, steps: 2 }, { model: modelDir }, cpA)
    expect(Exit.isSuccess(await run(a))).toBe(true)
    const ckpts = readdirSync(join(cpA, "training"))
    const hashes = ckpts.map((s) => sha(join(cpA, "training", s, "model.safetensors")))
    const other = tmp()
    writeRandomLlama(other, { ...SHAPE, intermediate: 96, seed: 4 })
    const c = context({ ...BASE, seqLen: 32, resumeFrom: join(cpA, "training") }, { model: other })
    const msg = errorOf(await run(c))
    expect(msg).toContain("checkpoint from another architecture")
    expect(msg).toContain("architecture.intermediate is 64 in the checkpoint, expected 96")
    expect(readdirSync(join(cpA, "training"))).toEqual(ckpts)
    expect(ckpts.map((s) => sha(join(cpA, "training", s, "model.safetensors")))).toEqual(hashes)
    expect(existsSync(c.ctx.outputs.model)).toBe(false)
  }, TIMEOUT)
})
