/**
 * Random tiny Hugging Face model folders for the tests: config.json + safetensors (single or sharded),
 * F32/F16/BF16, every supported architecture.
 *
 * Values are drawn directly on the target dtype's grid (a random float snapped to a multiple of its own
 * ulp, computed here independently of the writer), so the stored file holds exactly the float64 values
 * the reference gets: no rounding convention is shared between the code under test and the reference.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type TensorToWrite, type WriteDType, writeCheckpoint } from "../../common/safetensors.ts"

export type Arch = "LlamaForCausalLM" | "MistralForCausalLM" | "Phi3ForCausalLM" | "Qwen2ForCausalLM"
export type FloatDType = "F32" | "F16" | "BF16"

export interface RandomModelOptions {
  readonly arch?: Arch
  readonly hidden: number
  readonly layers: number
  readonly heads: number
  readonly kvHeads: number
  /** Written to config.json as head_dim; omitted means hidden / heads. */
  readonly headDim?: number
  readonly intermediate: number
  readonly vocab: number
  readonly dtype?: FloatDType
  readonly shards?: number
  readonly tied?: boolean
  readonly partialRotary?: number
  readonly ropeScaling?: Record<string, unknown>
  readonly ropeTheta?: number
  readonly maxPositions?: number
  readonly originalMaxPositions?: number
  readonly eps?: number
  /** LLaMA's attention_bias (q, k, v and o biases). */
  readonly attentionBias?: boolean
  readonly seed?: number
  /** Extra or replaced config.json fields. */
  readonly configPatch?: Record<string, unknown>
}

export interface RandomModel {
  readonly dir: string
  readonly config: Record<string, unknown>
  /** Every tensor as stored (HF names; Phi-3's fused projections fused), exact float64 values. */
  readonly tensors: Map<string, { readonly shape: readonly number[]; readonly data: Float64Array }>
}

/** mulberry32: small, seeded, good enough for test weights. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Snaps x to a value exactly representable in `dtype` (f16: 10 fraction bits, exponent ≥ −14; bf16: 7, ≥ −126). */
export function snap(x: number, dtype: FloatDType): number {
  if (dtype === "F32") return Math.fround(x)
  if (x === 0) return 0
  const [bits, minExp] = dtype === "F16" ? [10, -14] : [7, -126]
  const e = Math.max(Math.floor(Math.log2(Math.abs(x))), minExp)
  const ulp = 2 ** (e - bits)
  return Math.round(x / ulp) * ulp
}

export function tempDir(prefix = "ropeway-model-"): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

export const removeDir = (dir: string): void => removeTree(dir)

export function randomConfig(o: RandomModelOptions): Record<string, unknown> {
  const arch = o.arch ?? "LlamaForCausalLM"
  const modelType = { LlamaForCausalLM: "llama", MistralForCausalLM: "mistral", Phi3ForCausalLM: "phi3", Qwen2ForCausalLM: "qwen2" }[arch]
  const config: Record<string, unknown> = {
    architectures: [arch],
    model_type: modelType,
    hidden_size: o.hidden,
    intermediate_size: o.intermediate,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    vocab_size: o.vocab,
    hidden_act: "silu",
    rms_norm_eps: o.eps ?? 1e-5,
    rope_theta: o.ropeTheta ?? 10000,
    max_position_embeddings: o.maxPositions ?? 256,
    tie_word_embeddings: o.tied ?? false,
    rope_scaling: o.ropeScaling ?? null,
    torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[o.dtype ?? "F32"],
  }
  if (o.headDim !== undefined) config["head_dim"] = o.headDim
  if (o.partialRotary !== undefined) config["partial_rotary_factor"] = o.partialRotary
  if (o.originalMaxPositions !== undefined) config["original_max_position_embeddings"] = o.originalMaxPositions
  if (arch === "LlamaForCausalLM") config["attention_bias"] = o.attentionBias ?? false
  if (arch === "MistralForCausalLM" || arch === "Phi3ForCausalLM") config["sliding_window"] = null
  if (arch === "Qwen2ForCausalLM") {
    config["use_sliding_window"] = false
    config["sliding_window"] = 4096
  }
  return { ...config, ...o.configPatch }
}

/** Writes a random model into `dir` (created if needed) and returns its exact weights. */
export function writeRandomModel(dir: string, o: RandomModelOptions): RandomModel {
  const arch = o.arch ?? "LlamaForCausalLM"
  const dtype = o.dtype ?? "F32"
  const next = rng(o.seed ?? 1)
  const gauss = (): number => {
    const u = Math.max(next(), 1e-12)
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next())
  }
  const D = o.hidden
  const hd = o.headDim ?? D / o.heads
  const qDim = o.heads * hd
  const kvDim = o.kvHeads * hd
  const I = o.intermediate
  const tensors = new Map<string, { shape: readonly number[]; data: Float64Array }>()
  const make = (shape: readonly number[], std: number, mean = 0): Float64Array => {
    const n = shape.reduce((a, b) => a * b, 1)
    const d = new Float64Array(n)
    for (let i = 0; i < n; i++) d[i] = snap(mean + std * gauss(), dtype)
    return d
  }
  const put = (name: string, shape: readonly number[], data: Float64Array): void => {
    tensors.set(name, { shape, data })
  }
  const lin = (out: number, inp: number): Float64Array => make([out, inp], 1 / Math.sqrt(inp))
  const concatRows = (...parts: Float64Array[]): Float64Array => {
    const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0))
    let at = 0
    for (const p of parts) {
      out.set(p, at)
      at += p.length
    }
    return out
  }

  // A tied table is also the output head: scaled like one, so logits stay in a realistic range (|logit| ≲ 10).
  put("model.embed_tokens.weight", [o.vocab, D], make([o.vocab, D], o.tied === true ? 2 / Math.sqrt(D) : 1))
  const qkvBias = arch === "Qwen2ForCausalLM" || (arch === "LlamaForCausalLM" && o.attentionBias === true)
  for (let l = 0; l < o.layers; l++) {
    const p = `model.layers.${l}.`
    put(`${p}input_layernorm.weight`, [D], make([D], 0.2, 1))
    put(`${p}post_attention_layernorm.weight`, [D], make([D], 0.2, 1))
    const q = lin(qDim, D)
    const k = lin(kvDim, D)
    const v = lin(kvDim, D)
    const gate = lin(I, D)
    const up = lin(I, D)
    if (arch === "Phi3ForCausalLM") {
      put(`${p}self_attn.qkv_proj.weight`, [qDim + 2 * kvDim, D], concatRows(q, k, v))
      put(`${p}mlp.gate_up_proj.weight`, [2 * I, D], concatRows(gate, up))
    } else {
      put(`${p}self_attn.q_proj.weight`, [qDim, D], q)
      put(`${p}self_attn.k_proj.weight`, [kvDim, D], k)
      put(`${p}self_attn.v_proj.weight`, [kvDim, D], v)
      put(`${p}mlp.gate_proj.weight`, [I, D], gate)
      put(`${p}mlp.up_proj.weight`, [I, D], up)
    }
    if (qkvBias) {
      put(`${p}self_attn.q_proj.bias`, [qDim], make([qDim], 0.3))
      put(`${p}self_attn.k_proj.bias`, [kvDim], make([kvDim], 0.3))
      put(`${p}self_attn.v_proj.bias`, [kvDim], make([kvDim], 0.3))
    }
    put(`${p}self_attn.o_proj.weight`, [D, qDim], lin(D, qDim))
    if (arch === "LlamaForCausalLM" && o.attentionBias === true) put(`${p}self_attn.o_proj.bias`, [D], make([D], 0.1))
    put(`${p}mlp.down_proj.weight`, [D, I], lin(D, I))
  }
  put("model.norm.weight", [D], make([D], 0.2, 1))
  if (o.tied !== true) put("lm_head.weight", [o.vocab, D], make([o.vocab, D], 2 / Math.sqrt(D)))

  const config = randomConfig(o)
  writeConfigAndWeights(dir, config, tensors, dtype, o.shards ?? 1)
  return { dir, config, tensors }
}

/** Writes config.json and the tensors (used also by the error tests to plant a bad tensor). */
export function writeConfigAndWeights(
  dir: string,
  config: Record<string, unknown>,
  tensors: ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: ArrayLike<number> }>,
  dtype: WriteDType | ((name: string) => WriteDType),
  shards = 1,
): void {
  const list: TensorToWrite[] = [...tensors].map(([name, t]) => ({ name, dtype: typeof dtype === "function" ? dtype(name) : dtype, shape: t.shape, data: t.data }))
  mkdirSync(dir, { recursive: true })
  writeCheckpoint(dir, list, { shards })
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2))
}
