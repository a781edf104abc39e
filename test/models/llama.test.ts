/**
 * The llama model plugin against an independent float64 reference (plugins/models/llama/model.ref.ts) on
 * random tiny models: every architecture, MHA/GQA/MQA, head_dim 16–128, tied/untied, F32/F16/BF16,
 * sharded, partial rotary, linear scaling, and sequences longer than the trained context and than a chunk.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { gpu } from "../gpu-shared.ts"
import { type RandomModelOptions, removeDir, tempDir, writeRandomModel } from "./random-model.ts"
import { randomTokens, referenceLogprobs } from "../../plugins/models/llama/model.ref.ts"

const TOL = 1e-4
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})

interface Case {
  readonly name: string
  readonly model: RandomModelOptions
  readonly tokens: number
  readonly chunk?: number
  readonly logitRows?: number
}

async function run(c: Case): Promise<{ maxAbs: number; ref: Float64Array; got: Float64Array }> {
  const dir = tempDir()
  dirs.push(dir)
  const rm = writeRandomModel(dir, c.model)
  const tokens = randomTokens(c.tokens, c.model.vocab, c.model.seed ?? 7)
  const rt = await gpu()
  const model = await loadLlama(rt, dir)
  let got: Float64Array
  try {
    // f32 KV caches: the reference keeps every cached value exact (16-bit caches are test/models/kv-cache.test.ts's)
    got = await model.logprobs(tokens, { kvCache: "f32", ...(c.chunk === undefined ? {} : { chunk: c.chunk }), ...(c.logitRows === undefined ? {} : { logitRows: c.logitRows }) })
  } finally {
    model.dispose()
  }
  const ref = referenceLogprobs(rm, tokens)
  expect(got.length).toBe(tokens.length - 1)
  let maxAbs = 0
  for (let i = 0; i < ref.length; i++) maxAbs = Math.max(maxAbs, Math.abs(got[i]! - ref[i]!))
  return { maxAbs, ref, got }
}

/** The reference must not be degenerate (all log-probs nearly equal would make agreement meaningless). */
function spread(a: Float64Array): number {
  let min = Infinity
  let max = -Infinity
  for (const v of a) {
    min = Math.min(min, v)
    max = Math.max(max, v)
  }
  return max - min
}

const cases: Case[] = [
  { name: "LLaMA MHA head_dim 16, f32, untied", model: { hidden: 64, layers: 2, heads: 4, kvHeads: 4, intermediate: 96, vocab: 101, seed: 1 }, tokens: 40 },
  { name: "LLaMA GQA head_dim 32, f16, tied", model: { hidden: 128, layers: 2, heads: 4, kvHeads: 2, intermediate: 160, vocab: 150, dtype: "F16", tied: true, seed: 2 }, tokens: 48 },
  {
    name: "Mistral MQA head_dim 64 (explicit, ≠ hidden/heads), bf16",
    model: { arch: "MistralForCausalLM", hidden: 96, layers: 2, heads: 4, kvHeads: 1, headDim: 64, intermediate: 128, vocab: 200, dtype: "BF16", seed: 3 },
    tokens: 40,
  },
  {
    name: "LLaMA GQA head_dim 128, bf16, sharded into 3 files, tied",
    model: { hidden: 256, layers: 1, heads: 2, kvHeads: 1, intermediate: 256, vocab: 300, dtype: "BF16", shards: 3, tied: true, seed: 4 },
    tokens: 33,
  },
  {
    name: "Phi-3 fused qkv/gate_up, partial rotary 0.5, f16, sharded",
    model: { arch: "Phi3ForCausalLM", hidden: 128, layers: 2, heads: 4, kvHeads: 2, intermediate: 192, vocab: 120, dtype: "F16", partialRotary: 0.5, originalMaxPositions: 128, shards: 2, seed: 5 },
    tokens: 45,
  },
  {
    name: "Qwen2 q/k/v biases, GQA head_dim 32, tied, bf16",
    model: { arch: "Qwen2ForCausalLM", hidden: 128, layers: 2, heads: 4, kvHeads: 2, intermediate: 160, vocab: 180, dtype: "BF16", tied: true, seed: 6 },
    tokens: 41,
  },
  {
    name: "LLaMA attention_bias (q/k/v/o biases), rope_theta 500000",
    model: { hidden: 64, layers: 1, heads: 2, kvHeads: 2, intermediate: 64, vocab: 64, attentionBias: true, ropeTheta: 500000, seed: 8 },
    tokens: 30,
  },
  {
    name: "linear rope_scaling ×4, 600 tokens past max_position_embeddings 128, chunk 256, lm_head in 100-row parts",
    model: { hidden: 64, layers: 2, heads: 2, kvHeads: 1, intermediate: 96, vocab: 97, maxPositions: 128, ropeScaling: { rope_type: "linear", factor: 4 }, seed: 9 },
    tokens: 600,
    chunk: 256,
    logitRows: 100,
  },
  {
    name: "600 tokens, default chunk (512): one boundary, past max_position_embeddings 256, GQA head_dim 32",
    model: { hidden: 128, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 111, maxPositions: 256, seed: 10 },
    tokens: 600,
  },
  {
    name: "odd chunk sizes: 7-token chunks over 50 tokens, MQA head_dim 16, f16",
    model: { hidden: 64, layers: 2, heads: 4, kvHeads: 1, intermediate: 80, vocab: 90, dtype: "F16", seed: 11 },
    tokens: 50,
    chunk: 7,
  },
]

describe("llama forward vs float64 reference", () => {
  for (const c of cases) {
    test(c.name, async () => {
      const { maxAbs, ref } = await run(c)
      const minRef = ref.reduce((a, b) => Math.min(a, b), 0)
      console.log(`  ${c.name}: max |Δ| = ${maxAbs.toExponential(2)} (log-probs down to ${minRef.toFixed(1)})`)
      expect(spread(ref)).toBeGreaterThan(0.5)
      expect(maxAbs).toBeLessThan(TOL)
    }, 300_000) // first use compiles the attention kernel for this head size: minutes on a cold shader cache of a loaded 2-core machine
  }

  test("the comparison can fail: a reference with a different RoPE disagrees", async () => {
    const dir = tempDir()
    dirs.push(dir)
    const rm = writeRandomModel(dir, { hidden: 64, layers: 1, heads: 2, kvHeads: 2, intermediate: 64, vocab: 80, seed: 12 })
    const tokens = randomTokens(40, 80, 3)
    const rt = await gpu()
    const model = await loadLlama(rt, dir)
    const got = await model.logprobs(tokens)
    model.dispose()
    const wrong = referenceLogprobs(rm, tokens, { ropeScaling: { rope_type: "linear", factor: 2 } })
    let maxAbs = 0
    for (let i = 0; i < wrong.length; i++) maxAbs = Math.max(maxAbs, Math.abs(got[i]! - wrong[i]!))
    expect(maxAbs).toBeGreaterThan(1e-2)
  }, 300_000)

  test("a RoPE table override and a short input", async () => {
    const dir = tempDir()
    dirs.push(dir)
    const rm = writeRandomModel(dir, { hidden: 64, layers: 1, heads: 2, kvHeads: 1, intermediate: 64, vocab: 50, seed: 13 })
    const rt = await gpu()
    const model = await loadLlama(rt, dir, { ropeScaling: { rope_type: "linear", factor: 3 } })
    const tokens = randomTokens(20, 50, 5)
    const got = await model.logprobs(tokens)
    const ref = referenceLogprobs(rm, tokens, { ropeScaling: { rope_type: "linear", factor: 3 } })
    for (let i = 0; i < ref.length; i++) expect(Math.abs(got[i]! - ref[i]!)).toBeLessThan(TOL)
    // An explicit table (plain RoPE here) wins over the model's method.
    const plain = model.rope(20)
    const inv = plain.invFreq as Float64Array
    const override = await model.logprobs(tokens, { rope: { ...plain, invFreq: inv.map((f) => f * 3) } })
    const refPlain = referenceLogprobs(rm, tokens, { ropeScaling: null })
    for (let i = 0; i < refPlain.length; i++) expect(Math.abs(override[i]! - refPlain[i]!)).toBeLessThan(TOL)
    expect((await model.logprobs([3])).length).toBe(0)
    model.dispose()
  }, 300_000)
})
