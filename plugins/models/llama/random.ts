/**
 * A deterministic random-init LLaMA-family Hugging Face folder (config.json + model.safetensors).
 *
 * Weights are uniform on [−√3·σ, √3·σ] (std σ) drawn from plugins/data's xoshiro128** stream. Only
 * integer ops, power-of-two divisions, a multiply and a correctly rounded sqrt are involved, so the same
 * seed writes the same bytes on every machine and JS engine (Box–Muller would go through Math.log/cos,
 * whose last bits are engine-defined).
 *
 * This is NOT a trained model: its perplexity measures nothing about language, only that the pipeline
 * works and how RoPE settings change a fixed function.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { Rng } from "../../../common/rng.ts"
import { writeFileAtomic } from "../../../common/files.ts"
import { type TensorToWrite, writeCheckpoint } from "../../../common/safetensors.ts"

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
  readonly rmsNormEps?: number
  readonly tied?: boolean
  readonly bosTokenId?: number
  readonly eosTokenId?: number
  readonly seed: number
}

export function randomLlamaConfig(o: RandomLlamaOptions): Record<string, unknown> {
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
    rope_scaling: null,
    tie_word_embeddings: o.tied ?? false,
    attention_bias: false,
    torch_dtype: "float32",
  }
  if (o.bosTokenId !== undefined) config["bos_token_id"] = o.bosTokenId
  if (o.eosTokenId !== undefined) config["eos_token_id"] = o.eosTokenId
  return config
}

/** Tensors in HF names, F32, in a fixed order (the order is part of the bytes written). */
export function randomLlamaTensors(o: RandomLlamaOptions): TensorToWrite[] {
  const rng = Rng.seeded(o.seed, 0x11a3a)
  const D = o.hidden
  const hd = D / o.heads
  if (!Number.isInteger(hd)) throw new RangeError(`hidden ${D} is not a multiple of heads ${o.heads}`)
  const kvDim = (o.kvHeads ?? o.heads) * hd
  const I = o.intermediate
  const out: TensorToWrite[] = []
  const uniform = (shape: readonly number[], std: number, mean = 0): Float32Array => {
    const n = shape.reduce((a, b) => a * b, 1)
    const half = Math.sqrt(3) * std
    const d = new Float32Array(n)
    for (let i = 0; i < n; i++) d[i] = mean + (2 * rng.float() - 1) * half
    return d
  }
  const put = (name: string, shape: readonly number[], std: number, mean = 0): void => {
    out.push({ name, dtype: "F32", shape, data: uniform(shape, std, mean) })
  }
  // Scales as in a freshly initialised transformer with unit-variance activations: 1/√fan_in for
  // projections, so attention and the head are not flat (a flat model would make every RoPE setting equal).
  put("model.embed_tokens.weight", [o.vocab, D], 1)
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

/** Writes config.json and model.safetensors into `dir` (created if needed); returns the config. */
export function writeRandomLlama(dir: string, o: RandomLlamaOptions): Record<string, unknown> {
  mkdirSync(dir, { recursive: true })
  const config = randomLlamaConfig(o)
  writeCheckpoint(dir, randomLlamaTensors(o), { metadata: { format: "pt", ropeway: "random-init (untrained)" } })
  writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(config, null, 2)}\n`)
  return config
}
