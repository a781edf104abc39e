/**
 * config.json of the llama family (LLaMA, Mistral, Phi-3, Qwen2): the shapes, the quirks each
 * architecture has (Phi-3's fused projections, Qwen2's q/k/v biases), and the RoPE spec for plugins/rope.
 * Checked with arktype (every problem names the file and the field); defaults are transformers' where a
 * field may be absent (or null); fields that fix a shape must be present.
 */
import { type } from "arktype"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { inputError } from "../../../common/errors.ts"
import { isDirectory } from "../../../common/safetensors.ts"
import { checkJson, readJsonFile } from "../../../common/validate.ts"
import type { RopeSpec } from "../../rope/types.ts"

export const SUPPORTED_ARCHITECTURES = ["LlamaForCausalLM", "MistralForCausalLM", "Phi3ForCausalLM", "Qwen2ForCausalLM"] as const
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number]

export interface LlamaConfig {
  /** The folder and its config.json (errors name these). */
  readonly dir: string
  readonly file: string
  readonly architecture: Architecture
  readonly hiddenSize: number
  readonly intermediateSize: number
  readonly numLayers: number
  readonly numHeads: number
  readonly numKvHeads: number
  readonly headDim: number
  readonly vocabSize: number
  readonly rmsNormEps: number
  readonly tieWordEmbeddings: boolean
  /** Biases on q, k, v (Qwen2 always; LLaMA/Mistral with attention_bias). */
  readonly qkvBias: boolean
  /** Bias on o_proj (LLaMA with attention_bias). */
  readonly oBias: boolean
  /** Biases on gate, up, down (LLaMA with mlp_bias). */
  readonly mlpBias: boolean
  /** Phi-3: one qkv_proj and one gate_up_proj, split at load. */
  readonly fused: boolean
  /** Sliding-window attention span when the model uses it (Mistral v0.1, Qwen2 with use_sliding_window). */
  readonly slidingWindow: number | undefined
  readonly rope: RopeSpec
}

export interface ConfigOptions {
  /** An HF rope_scaling object that replaces config.json's (null: plain RoPE). */
  readonly ropeScaling?: Readonly<Record<string, unknown>> | null
}

/** Reads and validates `dir/config.json`. */
export function readLlamaConfig(dir: string, options: ConfigOptions = {}): LlamaConfig {
  if (!existsSync(dir)) throw inputError(dir, "model folder does not exist")
  if (!isDirectory(dir)) throw inputError(dir, "not a folder (expected a Hugging Face model folder)")
  const file = join(dir, "config.json")
  return parseLlamaConfig(readJsonFile(file, "not found (a Hugging Face model folder needs config.json)"), file, dir, options)
}

const MAX_HEAD_DIM = 65536

const DEFAULT_EPS: Readonly<Record<Architecture, number>> = {
  LlamaForCausalLM: 1e-6,
  MistralForCausalLM: 1e-6,
  Phi3ForCausalLM: 1e-5,
  Qwen2ForCausalLM: 1e-6,
}

const DEFAULT_MAX_POSITIONS: Readonly<Record<Architecture, number>> = {
  LlamaForCausalLM: 2048,
  MistralForCausalLM: 4096 * 32,
  Phi3ForCausalLM: 4096,
  Qwen2ForCausalLM: 32768,
}

const posInt = type("number.integer > 0").describe("a positive integer")
const posNum = type("number > 0").describe("a positive number")
const object = type("Record<string, unknown>").narrow((v) => !Array.isArray(v)).describe("an object")

/** What config.json may hold for this family (other keys are ignored, as transformers does). */
const ConfigJson = type({
  "architectures?": "string[] | null",
  "model_type?": "string | null",
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  vocab_size: posInt,
  "num_key_value_heads?": posInt.or("null"),
  "head_dim?": posInt.or("null"),
  "rms_norm_eps?": posNum.or("null"),
  "tie_word_embeddings?": "boolean | null",
  "hidden_act?": "'silu' | 'swish' | null",
  "attention_bias?": "boolean | null",
  "mlp_bias?": "boolean | null",
  "sliding_window?": posInt.or("null"),
  "use_sliding_window?": "boolean | null",
  "rope_theta?": posNum.or("null"),
  "partial_rotary_factor?": posNum.or("null"),
  "max_position_embeddings?": posInt.or("null"),
  "original_max_position_embeddings?": posInt.or("null"),
  "rope_scaling?": object.or("null"),
  "rope_parameters?": object.or("null"),
})
type ConfigJson = typeof ConfigJson.infer

const BY_MODEL_TYPE: Readonly<Record<string, Architecture>> = { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", phi3: "Phi3ForCausalLM", qwen2: "Qwen2ForCausalLM" }

function architectureOf(j: ConfigJson, file: string): Architecture {
  const archs = j.architectures
  let found: Architecture | undefined
  let named: string
  if (Array.isArray(archs) && archs.length > 0) {
    named = archs.join(", ")
    found = SUPPORTED_ARCHITECTURES.find((a) => archs.includes(a))
  } else if (typeof j.model_type === "string") {
    // Older folders without `architectures`: fall back to model_type.
    named = `model_type ${j.model_type}`
    found = BY_MODEL_TYPE[j.model_type]
  } else throw inputError(file, `missing field "architectures" (e.g. ["LlamaForCausalLM"])`)
  if (found === undefined) throw inputError(file, `unsupported architecture ${named}; supported: ${SUPPORTED_ARCHITECTURES.join(", ")}`)
  return found
}

/** The RoPE spec: rope_scaling (transformers ≤ 4.x) or rope_parameters (5.x, which also carries rope_theta). */
function ropeOf(j: ConfigJson, file: string, a: Architecture, headDim: number, options: ConfigOptions): RopeSpec {
  const params = j.rope_parameters ?? undefined
  const configScaling = j.rope_scaling ?? params
  const scaling = options.ropeScaling === undefined ? configScaling : options.ropeScaling ?? undefined
  // What RoPE parameter errors name: the flag, or the file and the key the object came from.
  const scalingKey = options.ropeScaling !== undefined ? "--rope-scaling" : `${file}: ${j.rope_scaling != null || params == null ? "rope_scaling" : "rope_parameters"}`
  const thetaIn = params?.["rope_theta"]
  const base = j.rope_theta ?? (typeof thetaIn === "number" && thetaIn > 0 ? thetaIn : 10000)
  const prfIn = params?.["partial_rotary_factor"]
  const prf = j.partial_rotary_factor ?? (typeof prfIn === "number" ? prfIn : 1)
  if (prf > 1) throw inputError(file, `partial_rotary_factor must be in (0, 1], got ${prf}`)
  const rotaryDim = Math.floor(headDim * prf)
  if (rotaryDim % 2 !== 0 || rotaryDim === 0) throw inputError(file, `partial_rotary_factor ${prf} gives ${rotaryDim} rotary dims of head_dim ${headDim}; it must be even and > 0`)
  const inScaling = scaling?.["original_max_position_embeddings"]
  const originalMaxPositions = j.original_max_position_embeddings ?? (typeof inScaling === "number" && Number.isSafeInteger(inScaling) && inScaling > 0 ? inScaling : undefined)
  const maxPositions = j.max_position_embeddings ?? DEFAULT_MAX_POSITIONS[a]
  return { headDim, rotaryDim, base, maxPositions, originalMaxPositions, numLayers: j.num_hidden_layers, scaling, scalingKey }
}

export function parseLlamaConfig(json: unknown, file: string, dir: string, options: ConfigOptions = {}): LlamaConfig {
  // a key set to undefined (a config built in code, not read from JSON) is an absent key
  const present = typeof json === "object" && json !== null && !Array.isArray(json) ? Object.fromEntries(Object.entries(json).filter(([, v]) => v !== undefined)) : json
  const j = checkJson(ConfigJson, present, file)
  const architecture = architectureOf(j, file)
  const numHeads = j.num_attention_heads
  const numKvHeads = j.num_key_value_heads ?? numHeads
  if (numHeads % numKvHeads !== 0) throw inputError(file, `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`)
  if (j.head_dim == null && j.hidden_size % numHeads !== 0) throw inputError(file, `hidden_size (${j.hidden_size}) is not a multiple of num_attention_heads (${numHeads}) and head_dim is not given`)
  const headDim = j.head_dim ?? j.hidden_size / numHeads
  // RoPE tables and attention are sized by it; real models use 64 to 256
  if (headDim > MAX_HEAD_DIM) throw inputError(file, `head dimension ${headDim} (head_dim, or hidden_size / num_attention_heads) is more than ${MAX_HEAD_DIM}`)
  const llamaLike = architecture === "LlamaForCausalLM" || architecture === "MistralForCausalLM"
  const attentionBias = llamaLike ? j.attention_bias ?? false : false
  const swUsed = architecture === "MistralForCausalLM" || architecture === "Phi3ForCausalLM" || (architecture === "Qwen2ForCausalLM" && j.use_sliding_window === true)
  return {
    dir,
    file,
    architecture,
    hiddenSize: j.hidden_size,
    intermediateSize: j.intermediate_size,
    numLayers: j.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: j.vocab_size,
    rmsNormEps: j.rms_norm_eps ?? DEFAULT_EPS[architecture],
    tieWordEmbeddings: j.tie_word_embeddings ?? false,
    qkvBias: architecture === "Qwen2ForCausalLM" || attentionBias,
    oBias: attentionBias,
    mlpBias: architecture === "LlamaForCausalLM" ? j.mlp_bias ?? false : false,
    fused: architecture === "Phi3ForCausalLM",
    slidingWindow: swUsed ? j.sliding_window ?? undefined : undefined,
    rope: ropeOf(j, file, architecture, headDim, options),
  }
}
