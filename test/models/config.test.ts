/** config.json parsing for the llama family: defaults, quirks per architecture, the RoPE spec, errors. */
import { describe, expect, test } from "bun:test"
import { InputError } from "../../common/errors.ts"
import { parseLlamaConfig } from "../../plugins/models/llama/config.ts"

const base = {
  architectures: ["LlamaForCausalLM"],
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  vocab_size: 100,
}
const parse = (patch: Record<string, unknown>, opts = {}) => parseLlamaConfig({ ...base, ...patch }, "/m/config.json", "/m", opts)

function expectError(f: () => unknown, ...mentions: string[]): void {
  let err: unknown
  try {
    f()
  } catch (e) {
    err = e
  }
  expect(err).toBeInstanceOf(InputError)
  for (const m of mentions) expect((err as Error).message).toContain(m)
}

describe("llama config", () => {
  test("defaults: kv heads = heads, head_dim = hidden/heads, theta 1e4, full rotary, untied", () => {
    const c = parse({})
    expect(c.numKvHeads).toBe(4)
    expect(c.headDim).toBe(16)
    expect(c.rmsNormEps).toBe(1e-6)
    expect(c.tieWordEmbeddings).toBe(false)
    expect(c.rope).toEqual({ headDim: 16, rotaryDim: 16, base: 10000, maxPositions: 2048, originalMaxPositions: undefined, numLayers: 2, scaling: undefined, scalingKey: "/m/config.json: rope_scaling" })
    expect(c.qkvBias || c.oBias || c.mlpBias || c.fused).toBe(false)
  })

  test("explicit head_dim (null means derived), GQA, eps, theta", () => {
    expect(parse({ head_dim: null }).headDim).toBe(16)
    const c = parse({ head_dim: 32, num_key_value_heads: 1, rms_norm_eps: 1e-5, rope_theta: 5e5, tie_word_embeddings: true })
    expect([c.headDim, c.numKvHeads, c.rmsNormEps, c.rope.base, c.tieWordEmbeddings]).toEqual([32, 1, 1e-5, 5e5, true])
  })

  test("architecture quirks", () => {
    expect(parse({ architectures: ["Qwen2ForCausalLM"] }).qkvBias).toBe(true)
    expect(parse({ architectures: ["Qwen2ForCausalLM"] }).oBias).toBe(false)
    const phi = parse({ architectures: ["Phi3ForCausalLM"], partial_rotary_factor: 0.75, original_max_position_embeddings: 4096 })
    expect([phi.fused, phi.rmsNormEps, phi.rope.rotaryDim, phi.rope.originalMaxPositions]).toEqual([true, 1e-5, 12, 4096])
    const llama = parse({ attention_bias: true, mlp_bias: true })
    expect([llama.qkvBias, llama.oBias, llama.mlpBias]).toEqual([true, true, true])
    expect(parse({ architectures: undefined, model_type: "mistral" }).architecture).toBe("MistralForCausalLM")
  })

  test("sliding windows: Mistral's applies, Qwen2's only with use_sliding_window", () => {
    expect(parse({ architectures: ["MistralForCausalLM"], sliding_window: 4096 }).slidingWindow).toBe(4096)
    expect(parse({ architectures: ["MistralForCausalLM"], sliding_window: null }).slidingWindow).toBeUndefined()
    expect(parse({ architectures: ["Qwen2ForCausalLM"], sliding_window: 4096, use_sliding_window: false }).slidingWindow).toBeUndefined()
    expect(parse({ sliding_window: 4096 }).slidingWindow).toBeUndefined()
  })

  test("rope_scaling, rope_parameters and the override", () => {
    const lin = { rope_type: "linear", factor: 4, original_max_position_embeddings: 512 }
    const c = parse({ rope_scaling: lin })
    expect(c.rope.scaling).toEqual(lin)
    expect(c.rope.originalMaxPositions).toBe(512)
    const v5 = parse({ rope_parameters: { rope_type: "default", rope_theta: 123456, partial_rotary_factor: 0.5 } })
    expect([v5.rope.base, v5.rope.rotaryDim, v5.rope.scaling?.["rope_type"]]).toEqual([123456, 8, "default"])
    expect(parse({ rope_scaling: lin }, { ropeScaling: { type: "linear", factor: 2 } }).rope.scaling).toEqual({ type: "linear", factor: 2 })
    expect(parse({ rope_scaling: lin }, { ropeScaling: null }).rope.scaling).toBeUndefined()
    expect(parse({ rope_scaling: lin }, { ropeScaling: null }).rope.scalingKey).toBe("--rope-scaling")
    expect(v5.rope.scalingKey).toBe("/m/config.json: rope_parameters")
  })

  test("errors name the file and field", () => {
    expectError(() => parse({ hidden_size: undefined }), "/m/config.json", "hidden_size")
    expectError(() => parse({ vocab_size: "100" }), "/m/config.json", "vocab_size", "positive integer")
    expectError(() => parse({ architectures: ["GemmaForCausalLM"] }), "unsupported architecture GemmaForCausalLM", "Qwen2ForCausalLM")
    expectError(() => parse({ num_key_value_heads: 3 }), "num_key_value_heads")
    expectError(() => parse({ partial_rotary_factor: 0.1 }), "partial_rotary_factor")
    expectError(() => parse({ hidden_act: "gelu" }), "hidden_act", "gelu")
    expectError(() => parse({ rope_scaling: [1] }), "rope_scaling")
    expectError(() => parseLlamaConfig([1], "/m/config.json", "/m"), "/m/config.json", "JSON object")
  })
})
