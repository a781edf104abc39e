/**
 * Deterministic random-init LLaMA-family Hugging Face folders (config.json + safetensors), from the tiny
 * shapes the tests use up to the exact shapes of published models (`PUBLISHED_SHAPES`: SmolLM2-135M,
 * Llama-3.2-1B), in F32, BF16 or F16, in one file or sharded as HF shards them.
 *
 * Weights are uniform on [−√3·σ, √3·σ] (std σ) drawn from plugins/data's xoshiro128** stream. Only
 * integer ops, power-of-two divisions, a multiply and a correctly rounded sqrt are involved, so the same
 * seed writes the same bytes on every machine and JS engine (Box–Muller would go through Math.log/cos,
 * whose last bits are engine-defined). Tensors are drawn one at a time as the writer reaches them, so a
 * billion-parameter folder is written holding one tensor in memory.
 *
 * This is NOT a trained model: its perplexity measures nothing about language, only that the pipeline
 * works, how fast, in how much memory, and how RoPE settings change a fixed function.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { Rng } from "../../../common/rng.ts"
import { writeFileAtomic } from "../../../common/files.ts"
import { type FloatDType, type LazyTensor, type TensorToWrite, f32ToBf16, lazyTensor, writeCheckpoint } from "../../../common/safetensors.ts"

export interface RandomLlamaOptions {
  readonly vocab: number
  readonly hidden: number
  readonly layers: number
  readonly heads: number
  /** Default: heads (no GQA). */
  readonly kvHeads?: number
  readonly intermediate: number
  /** max_position_embeddings: the original context. */
  readonly maxPositions: number
  readonly ropeTheta?: number
  /** config.json's rope_scaling (e.g. Llama 3's `llama3`); default none. */
  readonly ropeScaling?: Readonly<Record<string, unknown>>
  readonly rmsNormEps?: number
  readonly tied?: boolean
  readonly bosTokenId?: number
  readonly eosTokenId?: number
  /** Std of the embedding table (default 1; tied heads want ~few/√hidden so logits are not saturated). */
  readonly embedStd?: number
  readonly seed: number
}

export interface RandomWriteOptions {
  /** The file dtype of every tensor (default F32). */
  readonly dtype?: FloatDType
  /** Shard the weights into files of at most this many bytes (HF's index layout); default one file. */
  readonly maxShardBytes?: number
}

/**
 * The shapes of published checkpoints (their config.json as far as shapes and RoPE go), for benchmarks and
 * tests at real sizes. Weights are random: nothing is downloaded.
 */
export const PUBLISHED_SHAPES = {
  /** HuggingFaceTB/SmolLM2-135M: 134.5M parameters, 269 MB in bf16. */
  "smollm2-135m": {
    vocab: 49152, hidden: 576, layers: 30, heads: 9, kvHeads: 3, intermediate: 1536, maxPositions: 8192,
    ropeTheta: 100000, rmsNormEps: 1e-5, tied: true, bosTokenId: 0, eosTokenId: 0, embedStd: 4 / Math.sqrt(576),
  },
  /** meta-llama/Llama-3.2-1B: 1.236B parameters, 2.47 GB in bf16, Llama 3's RoPE scaling. */
  "llama-3.2-1b": {
    vocab: 128256, hidden: 2048, layers: 16, heads: 32, kvHeads: 8, intermediate: 8192, maxPositions: 131072,
    ropeTheta: 500000, rmsNormEps: 1e-5, tied: true, bosTokenId: 128000, eosTokenId: 128001, embedStd: 4 / Math.sqrt(2048),
    ropeScaling: { rope_type: "llama3", factor: 32, high_freq_factor: 4, low_freq_factor: 1, original_max_position_embeddings: 8192 },
  },
} as const satisfies Record<string, Omit<RandomLlamaOptions, "seed">>

export type PublishedShape = keyof typeof PUBLISHED_SHAPES

export function randomLlamaConfig(o: RandomLlamaOptions, dtype: FloatDType = "F32"): Record<string, unknown> {
  const config: Record<string, unknown> = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: o.hidden,
    intermediate_size: o.intermediate,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads ?? o.heads,
    vocab_size: o.vocab,
    hidden_act: "silu",
    rms_norm_eps: o.rmsNormEps ?? 1e-5,
    rope_theta: o.ropeTheta ?? 10000,
    max_position_embeddings: o.maxPositions,
    rope_scaling: o.ropeScaling ?? null,
    tie_word_embeddings: o.tied ?? false,
    attention_bias: false,
    torch_dtype: { F32: "float32", BF16: "bfloat16", F16: "float16" }[dtype],
  }
  if (o.bosTokenId !== undefined) config["bos_token_id"] = o.bosTokenId
  if (o.eosTokenId !== undefined) config["eos_token_id"] = o.eosTokenId
  return config
}

/** One tensor to draw: its name, shape and distribution. */
interface RandomSpec {
  readonly name: string
  readonly shape: readonly number[]
  readonly std: number
  readonly mean: number
}

/** Every tensor in HF names, in a fixed order (the order is part of the bytes written). */
function randomSpecs(o: RandomLlamaOptions): RandomSpec[] {
  const D = o.hidden
  const hd = D / o.heads
  if (!Number.isInteger(hd)) throw new RangeError(`hidden ${D} is not a multiple of heads ${o.heads}`)
  const kvDim = (o.kvHeads ?? o.heads) * hd
  const I = o.intermediate
  const out: RandomSpec[] = []
  const put = (name: string, shape: readonly number[], std: number, mean = 0): void => void out.push({ name, shape, std, mean })
  // Scales as in a freshly initialised transformer with unit-variance activations: 1/√fan_in for
  // projections, so attention and the head are not flat (a flat model would make every RoPE setting equal).
  put("model.embed_tokens.weight", [o.vocab, D], o.embedStd ?? 1)
  for (let l = 0; l < o.layers; l++) {
    const p = `model.layers.${l}.`
    put(`${p}input_layernorm.weight`, [D], 0.1, 1)
    put(`${p}self_attn.q_proj.weight`, [D, D], 1 / Math.sqrt(D))
    put(`${p}self_attn.k_proj.weight`, [kvDim, D], 1 / Math.sqrt(D))
    put(`${p}self_attn.v_proj.weight`, [kvDim, D], 1 / Math.sqrt(D))
    put(`${p}self_attn.o_proj.weight`, [D, D], 1 / Math.sqrt(D))
    put(`${p}post_attention_layernorm.weight`, [D], 0.1, 1)
    put(`${p}mlp.gate_proj.weight`, [I, D], 1 / Math.sqrt(D))
    put(`${p}mlp.up_proj.weight`, [I, D], 1 / Math.sqrt(D))
    put(`${p}mlp.down_proj.weight`, [D, I], 1 / Math.sqrt(I))
  }
  put("model.norm.weight", [D], 0.1, 1)
  if (o.tied !== true) put("lm_head.weight", [o.vocab, D], 1 / Math.sqrt(D))
  return out
}

/** The next tensor's values from the shared stream (specs must be drawn in order). */
function draw(rng: Rng, s: RandomSpec): Float32Array {
  const n = s.shape.reduce((a, b) => a * b, 1)
  const half = Math.sqrt(3) * s.std
  const d = new Float32Array(n)
  for (let i = 0; i < n; i++) d[i] = s.mean + (2 * rng.float() - 1) * half
  return d
}

const stream = (seed: number): Rng => Rng.seeded(seed, 0x11a3a)

/** Tensors in HF names, F32, in a fixed order, all in memory (small models: pretrain, benches). */
export function randomLlamaTensors(o: RandomLlamaOptions): TensorToWrite[] {
  const rng = stream(o.seed)
  return randomSpecs(o).map((s) => ({ name: s.name, dtype: "F32", shape: s.shape, data: draw(rng, s) }))
}

/** The same tensors, each drawn (and rounded to `dtype`) only when the writer reaches it. */
function lazyRandomTensors(o: RandomLlamaOptions, dtype: FloatDType): LazyTensor[] {
  const rng = stream(o.seed)
  let next = 0
  return randomSpecs(o).map((s, i) => ({
    name: s.name,
    dtype,
    shape: s.shape,
    bytes: () => {
      if (i !== next++) throw new Error(`random llama: tensor ${s.name} drawn out of order`)
      const values = draw(rng, s)
      return dtype === "BF16" ? new Uint8Array(f32ToBf16(values).buffer) : lazyTensor({ name: s.name, dtype, shape: s.shape, data: values }).bytes()
    },
  }))
}

/** Writes config.json and the weights into `dir` (created if needed), one tensor in memory at a time; returns the config. */
export function writeRandomLlama(dir: string, o: RandomLlamaOptions, w: RandomWriteOptions = {}): Record<string, unknown> {
  mkdirSync(dir, { recursive: true })
  const dtype = w.dtype ?? "F32"
  const config = randomLlamaConfig(o, dtype)
  writeCheckpoint(dir, lazyRandomTensors(o, dtype), {
    metadata: { format: "pt", ropeway: "random-init (untrained)" },
    ...(w.maxShardBytes === undefined ? {} : { maxShardBytes: w.maxShardBytes }),
  })
  writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(config, null, 2)}\n`)
  return config
}

/** A published model's shape, random weights (bf16, sharded like HF's ~1–5 GB shards, scaled down for small models). */
export function writePublishedShape(dir: string, shape: PublishedShape, seed = 1, w: RandomWriteOptions = {}): Record<string, unknown> {
  return writeRandomLlama(dir, { ...PUBLISHED_SHAPES[shape], seed }, { dtype: "BF16", maxShardBytes: shape === "smollm2-135m" ? 100e6 : 1e9, ...w })
}
