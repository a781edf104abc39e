/**
 * The trainable llama: whole-model GPU gradients against the float64 reference backward, and that
 * reference against float64 central finite differences of the loss.
 *
 * Error measure: per tensor, max |g_gpu − g_ref| / max |g_ref| (relative to the tensor's largest
 * gradient, so tiny entries of a tensor are not held to a relative bound f32 cannot meet); bound 1e-4.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { type RopeTable, defaultInvFreq } from "../../kernels/rope-table.ts"
import type { Tensor } from "../../kernels/tensor.ts"
import { fill } from "../../kernels/scale.ts"
import { parseLlamaConfig } from "../../plugins/models/llama/config.ts"
import { type TrainBatch, createTrainableLlama, segmentsFromPositions } from "../../plugins/models/llama/train.ts"
import { Optimizer } from "../../training/optimizer.ts"
import { gpu } from "../gpu-shared.ts"
import { type RandomModelOptions, removeDir, rng, tempDir, writeRandomModel } from "./random-model.ts"
import { type RefBatch, referenceLoss, referenceLossAndGrad } from "./reference-llama-backward.ts"
import { randomTokens } from "../../plugins/models/llama/model.ref.ts"

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})

/** Parameter kind: the name without its layer index. */
const kindOf = (name: string): string => name.replace(/^model\.layers\.\d+\./, "layers.*.")

interface Case {
  readonly label: string
  readonly model: RandomModelOptions
  readonly T: number
  readonly rope: (hd: number, layers: number) => RopeTable
  /** Position ids (default 0..T−1). */
  readonly positions?: (T: number) => number[]
  readonly segments?: boolean
  readonly mask?: boolean
  /** Load from the written folder (true) or from host tensors. */
  readonly fromDir?: boolean
  /** Accumulate in two halves of scale 0.5. */
  readonly twoHalves?: boolean
  /** lm_head rows per chunk (default: the whole sequence in one). */
  readonly logitRows?: number
}

const linear2 = (hd: number): RopeTable => {
  const base = defaultInvFreq(10000, hd)
  return { rotaryDim: hd, invFreq: base.map((f) => f / 2), originalInvFreq: base, startTokens: 0, attentionScale: 1 }
}

/** LongRoPE-style: per-dimension divisors rising from 1 to 8, n̂ = 3 start tokens, attention scale 1.1. */
const perDim = (hd: number): RopeTable => {
  const base = defaultInvFreq(10000, hd)
  const half = hd / 2
  return { rotaryDim: hd, invFreq: base.map((f, i) => f / (1 + (7 * i) / (half - 1))), originalInvFreq: base, startTokens: 3, attentionScale: 1.1 }
}

/** A different table per layer (partial: only half the head dims rotated). */
const perLayer = (hd: number, layers: number): RopeTable => {
  const rd = hd / 2
  const base = defaultInvFreq(500, rd)
  return { rotaryDim: rd, invFreq: Array.from({ length: layers }, (_, l) => base.map((f, i) => f / (1 + l + i))), originalInvFreq: base, startTokens: 0, attentionScale: 0.9 }
}

/** Two packed documents: positions restart at `cut`. */
const restartAt = (cut: number) => (T: number): number[] => Array.from({ length: T }, (_, t) => (t < cut ? t : t - cut))

const CASES: readonly Case[] = [
  {
    label: "MHA, untied, linear ×2, from the folder",
    model: { hidden: 32, layers: 2, heads: 4, kvHeads: 4, intermediate: 64, vocab: 97, seed: 11 },
    T: 23,
    rope: linear2,
    fromDir: true,
  },
  {
    label: "GQA 4/2, tied, per-dim divisors + n̂ + m, packed (restart + segments), label weights (0, 1, 4), lm_head in 7-row chunks",
    model: { hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96, vocab: 300, tied: true, seed: 12 },
    T: 40,
    rope: perDim,
    positions: restartAt(17),
    segments: true,
    mask: true,
    logitRows: 7,
  },
  {
    label: "GQA 4/1, attention biases, per-layer partial table, restart without segments, accumulated ×½ twice",
    model: { hidden: 32, layers: 2, heads: 4, kvHeads: 1, intermediate: 48, vocab: 64, attentionBias: true, seed: 13 },
    T: 29,
    rope: perLayer,
    positions: restartAt(11),
    twoHalves: true,
  },
]

function batchOf(cs: Case, hd: number): { gpu: TrainBatch; ref: RefBatch } {
  const { T } = cs
  const vocab = cs.model.vocab
  const tokens = randomTokens(T + 1, vocab, cs.model.seed ?? 1)
  const positions = cs.positions?.(T) ?? Array.from({ length: T }, (_, t) => t)
  const rope = cs.rope(hd, cs.model.layers)
  const r = rng(99)
  const labelMask = cs.mask === true ? Array.from({ length: T }, () => { const u = r(); return u < 0.3 ? 0 : u < 0.8 ? 1 : 4 }) : undefined
  const segments = cs.segments === true ? [...segmentsFromPositions(positions)] : undefined
  const ref: RefBatch = {
    inputs: tokens.slice(0, T), targets: tokens.slice(1), positions, rope,
    ...(labelMask === undefined ? {} : { labelMask }),
    ...(segments === undefined ? {} : { segments }),
  }
  const g: TrainBatch = {
    tokens: Uint32Array.from(tokens), positions: Uint32Array.from(positions), rope,
    ...(labelMask === undefined ? {} : { labelMask }),
    ...(segments === undefined ? {} : { segments }),
  }
  return { gpu: g, ref }
}

describe("trainable llama gradients vs float64 reference backward", () => {
  for (const cs of CASES) {
    test(cs.label, async () => {
      const rt = await gpu()
      const dir = tempDir("ropeway-train-")
      dirs.push(dir)
      const m = writeRandomModel(dir, cs.model)
      const config = parseLlamaConfig(m.config, `${dir}/config.json`, dir)
      const host = new Map([...m.tensors].map(([n, t]) => [n, Float32Array.from(t.data)]))
      const model = createTrainableLlama(rt, config, cs.fromDir === true ? dir : host, cs.logitRows === undefined ? {} : { logitRows: cs.logitRows })
      const grads = new Map<string, Tensor>()
      for (const p of model.params) {
        const g = rt.tensor(p.value.shape)
        fill(rt, g, 0)
        grads.set(p.name, g)
      }
      try {
        expect(model.params.map((p) => p.name).sort()).toEqual([...m.tensors.keys()].sort())
        const { gpu: batch, ref } = batchOf(cs, config.headDim)
        const sink = { grads: (n: string) => grads.get(n)! }
        let loss: number
        if (cs.twoHalves === true) {
          loss = (await model.lossAndGrad(batch, { ...sink, scale: 0.5 })).loss
          await model.lossAndGrad(batch, { ...sink, scale: 0.5 })
        } else loss = (await model.lossAndGrad(batch, sink)).loss
        const want = referenceLossAndGrad(m.config, m.tensors, ref)
        expect(Math.abs(loss - want.loss) / want.loss).toBeLessThan(1e-5)
        // Forward-only gives the same loss and touches no gradient.
        const fwd = await model.lossAndGrad(batch)
        expect(Math.abs(fwd.loss - loss)).toBeLessThan(1e-6 * loss)

        const worst = new Map<string, number>()
        for (const [name, g] of grads) {
          const got = await rt.read(g)
          const ref64 = want.grads.get(name)!
          let maxRef = 0
          let maxDiff = 0
          for (let i = 0; i < ref64.length; i++) {
            maxRef = Math.max(maxRef, Math.abs(ref64[i]!))
            maxDiff = Math.max(maxDiff, Math.abs(got[i]! - ref64[i]!))
          }
          expect(maxRef).toBeGreaterThan(0)
          const rel = maxDiff / maxRef
          const kind = kindOf(name)
          worst.set(kind, Math.max(worst.get(kind) ?? 0, rel))
        }
        console.log(`${cs.label}: loss ${loss.toFixed(6)} (ref ${want.loss.toFixed(6)})\n` +
          [...worst].map(([k, v]) => `  ${k.padEnd(40)} ${v.toExponential(2)}`).join("\n"))
        for (const [kind, rel] of worst) expect({ kind, rel: rel < 1e-4 }).toEqual({ kind, rel: true })
      } finally {
        rt.release(...grads.values())
        model.dispose()
      }
    })
  }
})

describe("float64 reference backward vs central finite differences", () => {
  for (const cs of CASES) {
    test(cs.label, () => {
      const dir = tempDir("ropeway-train-fd-")
      dirs.push(dir)
      const m = writeRandomModel(dir, cs.model)
      const hd = cs.model.hidden / cs.model.heads
      const { ref } = batchOf(cs, hd)
      const want = referenceLossAndGrad(m.config, m.tensors, ref)
      const r = rng(7)
      const h = 1e-5
      let checked = 0
      for (const [name, t] of m.tensors) {
        const g = want.grads.get(name)!
        let maxG = 0
        for (const v of g) maxG = Math.max(maxG, Math.abs(v))
        // Embedding rows of tokens absent from the sequence have zero gradient: probe used rows' entries.
        const picks = name === "model.embed_tokens.weight"
          ? [ref.inputs[0]! * cs.model.hidden + 3, ref.inputs[5]! * cs.model.hidden + 1]
          : [Math.floor(r() * t.data.length)]
        for (const i of picks) {
          const old = t.data[i]!
          t.data[i] = old + h
          const up = referenceLoss(m.config, m.tensors, ref)
          t.data[i] = old - h
          const down = referenceLoss(m.config, m.tensors, ref)
          t.data[i] = old
          const fd = (up - down) / (2 * h)
          expect({ name, i, err: Math.abs(fd - g[i]!) <= 1e-6 * maxG + 1e-10 }).toEqual({ name, i, err: true })
          checked++
        }
      }
      expect(checked).toBeGreaterThan(15)
    })
  }
})

describe("trainable llama memory and errors", () => {
  test("a training step's activations grow linearly with T (4× length ≤ 5× bytes)", async () => {
    const rt = await gpu()
    const dir = tempDir("ropeway-train-mem-")
    dirs.push(dir)
    const m = writeRandomModel(dir, { hidden: 32, layers: 2, heads: 2, kvHeads: 2, intermediate: 64, vocab: 64, seed: 5 })
    const config = parseLlamaConfig(m.config, `${dir}/config.json`, dir)
    const model = createTrainableLlama(rt, config, dir)
    const grads = model.params.map((p) => {
      const g = rt.tensor(p.value.shape)
      fill(rt, g, 0)
      return [p.name, g] as const
    })
    const byName = new Map(grads)
    const rope = linear2(config.headDim)
    const activations: number[] = []
    try {
      for (const T of [128, 512]) {
        const batch = { tokens: Uint32Array.from(randomTokens(T + 1, 64, T)), rope }
        await rt.sync()
        rt.trim()
        rt.resetPeak()
        const live0 = rt.stats.liveBytes
        await model.lossAndGrad(batch, { grads: (n) => byName.get(n)! })
        await rt.sync()
        activations.push(rt.stats.peakBytes - live0)
      }
      const ratio = activations[1]! / activations[0]!
      console.log(`activation bytes T=128: ${activations[0]}, T=512: ${activations[1]} (×${ratio.toFixed(2)})`)
      expect(ratio).toBeLessThan(5)
    } finally {
      rt.release(...byName.values())
      model.dispose()
    }
  })

  test("bad inputs fail with a message naming what is wrong", async () => {
    const rt = await gpu()
    const dir = tempDir("ropeway-train-err-")
    dirs.push(dir)
    const m = writeRandomModel(dir, { hidden: 16, layers: 1, heads: 2, kvHeads: 1, intermediate: 32, vocab: 20, seed: 6 })
    const config = parseLlamaConfig(m.config, `${dir}/config.json`, dir)
    const model = createTrainableLlama(rt, config, dir)
    const rope = linear2(config.headDim)
    try {
      await expect(model.lossAndGrad({ tokens: [1, 2, 25], rope })).rejects.toThrow(/token 25 at index 1 is outside the vocabulary/)
      await expect(model.lossAndGrad({ tokens: [1, 2, 3], positions: [0], rope })).rejects.toThrow(/positions has 1 values, expected 2/)
      await expect(model.lossAndGrad({ inputs: [1, 2], targets: [2], rope })).rejects.toThrow(/targets has 1 values, expected 2/)
      // Nothing scored: loss 0, no NaN.
      expect((await model.lossAndGrad({ tokens: [1, 2, 3], labelMask: [0, 0], rope })).loss).toBe(0)
    } finally {
      model.dispose()
    }
    const missing = new Map([...m.tensors].filter(([n]) => n !== "model.norm.weight").map(([n, t]) => [n, Float32Array.from(t.data)]))
    expect(() => createTrainableLlama(rt, config, missing)).toThrow(/model\.norm\.weight/)
  })
})

describe("trainable llama with the optimizer and checkpoints", () => {
  test("AdamW on the Optimizer's gradients lowers the loss of a fixed sequence", async () => {
    const rt = await gpu()
    const dir = tempDir("ropeway-train-opt-")
    dirs.push(dir)
    const m = writeRandomModel(dir, { hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 64, vocab: 50, seed: 8 })
    const config = parseLlamaConfig(m.config, `${dir}/config.json`, dir)
    const model = createTrainableLlama(rt, config, dir)
    const opt = new Optimizer(rt, model.params, { maxGradNorm: 1 })
    const batch = { tokens: Uint32Array.from(randomTokens(33, 50, 3)), rope: linear2(config.headDim) }
    try {
      const losses: number[] = []
      for (let step = 0; step < 8; step++) {
        opt.zeroGrad()
        losses.push((await model.lossAndGrad(batch, { grads: (n) => opt.grad(n) })).loss)
        await opt.step(3e-3)
      }
      expect(losses[7]!).toBeLessThan(losses[0]! - 0.1)
    } finally {
      opt.dispose()
      model.dispose()
    }
  })

  test("hfTensors gives the checkpoint's own names, shapes and values (Phi-3 fused again)", async () => {
    const rt = await gpu()
    const dir = tempDir("ropeway-train-phi3-")
    dirs.push(dir)
    const m = writeRandomModel(dir, { arch: "Phi3ForCausalLM", hidden: 16, layers: 1, heads: 2, kvHeads: 1, intermediate: 24, vocab: 20, seed: 9 })
    const config = parseLlamaConfig(m.config, `${dir}/config.json`, dir)
    const model = createTrainableLlama(rt, config, dir)
    try {
      expect(model.params.some((p) => p.name.endsWith("k_proj.weight"))).toBe(true)
      const out = await model.hfTensors()
      expect(out.map((t) => t.name).sort()).toEqual([...m.tensors.keys()].sort())
      for (const t of out) {
        const want = m.tensors.get(t.name)!
        expect(t.shape).toEqual(want.shape)
        expect(Array.from(t.data)).toEqual(Array.from(want.data))
      }
    } finally {
      model.dispose()
    }
  })
})

describe("trainable llama with LoRA", () => {
  test("adapter, norm and embedding gradients match the float64 reference on the merged weights", async () => {
    const rt = await gpu()
    const dir = tempDir("ropeway-train-lora-")
    dirs.push(dir)
    const opts: RandomModelOptions = { hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48, vocab: 61, seed: 21 }
    const m = writeRandomModel(dir, opts)
    const config = parseLlamaConfig(m.config, `${dir}/config.json`, dir)
    const targets = ["q_proj", "v_proj", "o_proj", "down_proj"] as const
    const model = createTrainableLlama(rt, config, dir, { lora: { config: { rank: 4, alpha: 8, seed: 3 }, targets, trainNorms: true, trainEmbeddings: true } })
    const grads = new Map<string, Tensor>()
    try {
      const names = model.params.map((p) => p.name)
      expect(names.filter((n) => n.includes("lora_")).length).toBe(2 * targets.length * opts.layers)
      expect(names.some((n) => n.endsWith("q_proj.weight") || n === "lm_head.weight")).toBe(false)
      expect(names).toContain("model.embed_tokens.weight")
      expect(names).toContain("model.layers.1.post_attention_layernorm.weight")
      // B starts at zero (the adapted model is the base one); give it values so dA is not trivially 0.
      const r = rng(5)
      for (const p of model.params) {
        if (p.name.endsWith("lora_B.weight")) rt.write(p.value, Float32Array.from({ length: p.value.shape[0]! * p.value.shape[1]! }, () => Math.fround((r() - 0.5) * 0.2)))
        const g = rt.tensor(p.value.shape)
        fill(rt, g, 0)
        grads.set(p.name, g)
      }
      const { gpu: batch, ref } = batchOf({ label: "lora", model: opts, T: 26, rope: perDim, positions: restartAt(9), segments: true }, config.headDim)
      const loss = (await model.lossAndGrad(batch, { grads: (n) => grads.get(n)! })).loss

      // The reference sees W' = W + s·B·A (float64 from the adapters' f32 values).
      const s = 8 / 4
      const merged = new Map(m.tensors)
      const ab = new Map<string, { a: Float32Array; b: Float32Array; outF: number; inF: number }>()
      for (let l = 0; l < opts.layers; l++) {
        for (const t of targets) {
          const mod = `model.layers.${l}.${t.endsWith("down_proj") ? "mlp" : "self_attn"}.${t}`
          const w = m.tensors.get(`${mod}.weight`)!
          const [outF, inF] = w.shape as [number, number]
          const a = await rt.read(model.param(`${mod}.lora_A.weight`))
          const b = await rt.read(model.param(`${mod}.lora_B.weight`))
          ab.set(mod, { a, b, outF, inF })
          const data = Float64Array.from(w.data)
          for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) {
            let acc = 0
            for (let k = 0; k < 4; k++) acc += b[o * 4 + k]! * a[k * inF + i]!
            data[o * inF + i] = data[o * inF + i]! + s * acc
          }
          merged.set(`${mod}.weight`, { shape: w.shape, data })
        }
      }
      const want = referenceLossAndGrad(m.config, merged, ref)
      expect(Math.abs(loss - want.loss) / want.loss).toBeLessThan(1e-5)
      const expected = new Map<string, Float64Array>()
      for (const [mod, { a, b, outF, inF }] of ab) {
        const dW = want.grads.get(`${mod}.weight`)!
        const dA = new Float64Array(4 * inF)
        const dB = new Float64Array(outF * 4)
        for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) {
          const g = dW[o * inF + i]!
          for (let k = 0; k < 4; k++) {
            dB[o * 4 + k] = dB[o * 4 + k]! + s * g * a[k * inF + i]!
            dA[k * inF + i] = dA[k * inF + i]! + s * b[o * 4 + k]! * g
          }
        }
        expected.set(`${mod}.lora_A.weight`, dA)
        expected.set(`${mod}.lora_B.weight`, dB)
      }
      const worst = new Map<string, number>()
      for (const [name, g] of grads) {
        const got = await rt.read(g)
        const ref64 = expected.get(name) ?? want.grads.get(name)!
        let maxRef = 0
        let maxDiff = 0
        for (let i = 0; i < ref64.length; i++) {
          maxRef = Math.max(maxRef, Math.abs(ref64[i]!))
          maxDiff = Math.max(maxDiff, Math.abs(got[i]! - ref64[i]!))
        }
        expect(maxRef).toBeGreaterThan(0)
        const kind = kindOf(name)
        worst.set(kind, Math.max(worst.get(kind) ?? 0, maxDiff / maxRef))
      }
      console.log(`LoRA: loss ${loss.toFixed(6)}\n` + [...worst].map(([k, v]) => `  ${k.padEnd(40)} ${v.toExponential(2)}`).join("\n"))
      for (const [kind, rel] of worst) expect({ kind, rel: rel < 1e-4 }).toEqual({ kind, rel: true })

      // Export merges the adapters into the base weights.
      const out = new Map((await model.hfTensors()).map((t) => [t.name, t.data]))
      const q = merged.get("model.layers.0.self_attn.q_proj.weight")!.data
      const qOut = out.get("model.layers.0.self_attn.q_proj.weight")!
      for (let i = 0; i < q.length; i += 7) expect(Math.abs(qOut[i]! - q[i]!)).toBeLessThan(1e-6)
    } finally {
      rt.release(...grads.values())
      model.dispose()
    }
  })
})
