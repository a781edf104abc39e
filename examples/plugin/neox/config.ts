/**
 * GPT-NeoX / Pythia config.json (transformers' GPTNeoXConfig), checked with arktype: every problem names
 * the file and the field. Both namings are read: `rotary_pct` / `rotary_emb_base` (older) and
 * `partial_rotary_factor` / `rope_theta` (newer).
 */
import { type } from "arktype"
import { join } from "node:path"
import { checkJson, inputError, type InspectOptions, type ModelConfig, readJsonFile, type RopeSpec, ropeSpecFromConfig } from "../../../plugins/api.ts"

export const ARCHITECTURE = "GPTNeoXForCausalLM"

const ConfigJson = type({
  architectures: "string[]",
  hidden_size: "number.integer > 0",
  num_attention_heads: "number.integer > 0",
  num_hidden_layers: "number.integer > 0",
  intermediate_size: "number.integer > 0",
  vocab_size: "number.integer > 0",
  max_position_embeddings: "number.integer > 0",
  "layer_norm_eps?": "number > 0",
  "rotary_pct?": "0 < number <= 1",
  "partial_rotary_factor?": "0 < number <= 1",
  "rotary_emb_base?": "number > 1",
  "rope_theta?": "number > 1",
  "use_parallel_residual?": "boolean",
  "hidden_act?": "'gelu'",
  "tie_word_embeddings?": "false",
  "attention_bias?": "true",
  "rope_scaling?": "Record<string, unknown> | null",
})

export interface NeoxConfig extends ModelConfig {
  readonly numHeads: number
  readonly headDim: number
  readonly intermediateSize: number
  readonly layerNormEps: number
  /** x + attn(ln1(x)) + mlp(ln2(x)) (Pythia) rather than two residual steps. */
  readonly parallelResidual: boolean
}

/** config.json as an object (parsed already), checked and read; `options` as the family contract says. */
export function parseNeoxConfig(json: unknown, file: string, dir: string, options: InspectOptions = {}): NeoxConfig {
  const c = checkJson(ConfigJson, json, file)
  if (c.hidden_size % c.num_attention_heads !== 0) throw inputError(file, `hidden_size (${c.hidden_size}) is not a multiple of num_attention_heads (${c.num_attention_heads})`)
  // The rope fields under the names ropeSpecFromConfig reads; an override replaces rope_scaling.
  const normalized = {
    ...(json as Record<string, unknown>),
    partial_rotary_factor: c.partial_rotary_factor ?? c.rotary_pct ?? 0.25,
    rope_theta: c.rope_theta ?? c.rotary_emb_base ?? 10000,
    ...(options.ropeScaling === undefined ? {} : { rope_scaling: options.ropeScaling }),
  }
  const rope: RopeSpec = ropeSpecFromConfig(normalized, file)
  return {
    dir, file, architecture: ARCHITECTURE, hiddenSize: c.hidden_size, numLayers: c.num_hidden_layers, vocabSize: c.vocab_size,
    numHeads: c.num_attention_heads, headDim: c.hidden_size / c.num_attention_heads, intermediateSize: c.intermediate_size,
    layerNormEps: c.layer_norm_eps ?? 1e-5, parallelResidual: c.use_parallel_residual ?? true,
    rope: options.ropeSource === undefined ? rope : { ...rope, scalingKey: options.ropeSource },
  }
}

export function readNeoxConfig(dir: string, options: InspectOptions = {}): NeoxConfig {
  const file = join(dir, "config.json")
  return parseNeoxConfig(readJsonFile(file, "not found (a Hugging Face model folder needs config.json)"), file, dir, options)
}

/** Every tensor the config implies, with its shape (HF names). */
export function neoxTensors(c: NeoxConfig): Map<string, readonly number[]> {
  const D = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
  const m = new Map<string, readonly number[]>([["gpt_neox.embed_in.weight", [V, D]]])
  for (let l = 0; l < c.numLayers; l++) {
    const p = `gpt_neox.layers.${l}.`
    for (const n of ["input_layernorm", "post_attention_layernorm"]) (m.set(`${p}${n}.weight`, [D]), m.set(`${p}${n}.bias`, [D]))
    m.set(`${p}attention.query_key_value.weight`, [3 * D, D]).set(`${p}attention.query_key_value.bias`, [3 * D])
    m.set(`${p}attention.dense.weight`, [D, D]).set(`${p}attention.dense.bias`, [D])
    m.set(`${p}mlp.dense_h_to_4h.weight`, [I, D]).set(`${p}mlp.dense_h_to_4h.bias`, [I])
    m.set(`${p}mlp.dense_4h_to_h.weight`, [D, I]).set(`${p}mlp.dense_4h_to_h.bias`, [D])
  }
  m.set("gpt_neox.final_layer_norm.weight", [D]).set("gpt_neox.final_layer_norm.bias", [D])
  m.set("embed_out.weight", [V, D])
  return m
}
