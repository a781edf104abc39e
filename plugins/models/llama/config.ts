/**
 * config.json of the llama family (LLaMA, Mistral, Phi-3, Qwen2): the shapes, the quirks each
 * architecture has (Phi-3's fused projections, Qwen2's q/k/v biases), and the RoPE spec for plugins/rope.
 * Defaults are transformers' where a field may be absent; fields that fix a shape must be present.
 */
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { inputError } from "../../../pipeline/errors.ts"
import type { RopeSpec } from "../../rope/types.ts"
import { isDirectory } from "../safetensors.ts"

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
  if (!existsSync(file)) throw inputError(file, "not found (a Hugging Face model folder needs config.json)")
  let json: unknown
  try {
    json = JSON.parse(readFileSync(file, "utf8"))
  } catch (e) {
    throw inputError(file, `malformed JSON (${(e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ")})`)
  }
  return parseLlamaConfig(json, file, dir, options)
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

export function parseLlamaConfig(json: unknown, file: string, dir: string, options: ConfigOptions = {}): LlamaConfig {
  if (!isRecord(json)) throw inputError(file, "expected a JSON object")
  const f = new Fields(json, file)

  const archs = json["architectures"]
  const modelType = json["model_type"]
  let architecture: Architecture | undefined
  let named: string
  if (Array.isArray(archs) && archs.length > 0) {
    named = archs.map((a) => (typeof a === "string" ? a : `(${Array.isArray(a) ? "a list" : a === null ? "null" : typeof a})`)).join(", ")
    architecture = SUPPORTED_ARCHITECTURES.find((a) => archs.includes(a))
  } else if (typeof modelType === "string") {
    // Older folders without `architectures`: fall back to model_type.
    named = `model_type ${modelType}`
    const byType: Record<string, Architecture> = { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", phi3: "Phi3ForCausalLM", qwen2: "Qwen2ForCausalLM" }
    architecture = byType[modelType]
  } else {
    throw inputError(file, `missing field "architectures" (e.g. ["LlamaForCausalLM"])`)
  }
  if (architecture === undefined) {
    throw inputError(file, `unsupported architecture ${named}; supported: ${SUPPORTED_ARCHITECTURES.join(", ")}`)
  }

  const hiddenSize = f.posInt("hidden_size")
  const intermediateSize = f.posInt("intermediate_size")
  const numLayers = f.posInt("num_hidden_layers")
  const numHeads = f.posInt("num_attention_heads")
  const vocabSize = f.posInt("vocab_size")
  const numKvHeads = f.posInt("num_key_value_heads", numHeads)
  if (numHeads % numKvHeads !== 0) {
    throw inputError(file, `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`)
  }
  let headDim: number
  if (json["head_dim"] !== undefined && json["head_dim"] !== null) headDim = f.posInt("head_dim")
  else {
    if (hiddenSize % numHeads !== 0) throw inputError(file, `hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads}) and head_dim is not given`)
    headDim = hiddenSize / numHeads
  }
  // RoPE tables and attention are sized by it; real models use 64 to 256
  if (headDim > MAX_HEAD_DIM) throw inputError(file, `head dimension ${headDim} (head_dim, or hidden_size / num_attention_heads) is more than ${MAX_HEAD_DIM}`)
  const rmsNormEps = f.posNumber("rms_norm_eps", DEFAULT_EPS[architecture])
  const tieWordEmbeddings = f.bool("tie_word_embeddings", false)
  const act = f.str("hidden_act", "silu")
  if (act !== "silu" && act !== "swish") throw inputError(file, `hidden_act: unsupported "${act}"; supported: silu`)

  const attentionBias = architecture === "LlamaForCausalLM" || architecture === "MistralForCausalLM" ? f.bool("attention_bias", false) : false
  const mlpBias = architecture === "LlamaForCausalLM" ? f.bool("mlp_bias", false) : false

  let slidingWindow: number | undefined
  const sw = json["sliding_window"]
  const swUsed = architecture === "MistralForCausalLM" || (architecture === "Qwen2ForCausalLM" && json["use_sliding_window"] === true) ||
    (architecture === "Phi3ForCausalLM")
  if (swUsed && sw !== undefined && sw !== null) slidingWindow = f.posInt("sliding_window")

  // RoPE: rope_scaling (transformers ≤ 4.x) or rope_parameters (5.x, which also carries rope_theta).
  const params = json["rope_parameters"]
  if (params !== undefined && params !== null && !isRecord(params)) throw inputError(file, "rope_parameters: expected an object")
  const rawScaling = json["rope_scaling"] ?? params
  if (rawScaling !== undefined && rawScaling !== null && !isRecord(rawScaling)) throw inputError(file, "rope_scaling: expected an object or null")
  const configScaling = isRecord(rawScaling) ? rawScaling : undefined
  const scaling = options.ropeScaling === undefined ? configScaling : options.ropeScaling ?? undefined
  // What RoPE parameter errors name: the flag, or the file and the key the object came from.
  const scalingKey = options.ropeScaling !== undefined ? "--rope-scaling" : `${file}: ${json["rope_scaling"] != null || params == null ? "rope_scaling" : "rope_parameters"}`
  const thetaIn = (params as Record<string, unknown> | undefined)?.["rope_theta"]
  const base = json["rope_theta"] !== undefined ? f.posNumber("rope_theta", 10000) : typeof thetaIn === "number" && thetaIn > 0 ? thetaIn : 10000
  const prfIn = (params as Record<string, unknown> | undefined)?.["partial_rotary_factor"]
  const prf = json["partial_rotary_factor"] !== undefined || typeof prfIn !== "number" ? f.posNumber("partial_rotary_factor", 1) : prfIn
  if (prf > 1) throw inputError(file, `partial_rotary_factor must be in (0, 1], got ${prf}`)
  const rotaryDim = Math.floor(headDim * prf)
  if (rotaryDim % 2 !== 0 || rotaryDim === 0) {
    throw inputError(file, `partial_rotary_factor ${prf} gives ${rotaryDim} rotary dims of head_dim ${headDim}; it must be even and > 0`)
  }
  const maxPositions = f.posInt("max_position_embeddings", DEFAULT_MAX_POSITIONS[architecture])
  let originalMaxPositions: number | undefined
  if (json["original_max_position_embeddings"] !== undefined && json["original_max_position_embeddings"] !== null) {
    originalMaxPositions = f.posInt("original_max_position_embeddings")
  } else {
    const inScaling = scaling?.["original_max_position_embeddings"]
    if (typeof inScaling === "number" && Number.isSafeInteger(inScaling) && inScaling > 0) originalMaxPositions = inScaling
  }

  return {
    dir,
    file,
    architecture,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps,
    tieWordEmbeddings,
    qkvBias: architecture === "Qwen2ForCausalLM" || attentionBias,
    oBias: attentionBias,
    mlpBias,
    fused: architecture === "Phi3ForCausalLM",
    slidingWindow,
    rope: { headDim, rotaryDim, base, maxPositions, originalMaxPositions, numLayers, scaling, scalingKey },
  }
}

/** Typed field access with one-line errors naming the file and field. */
class Fields {
  constructor(
    private readonly json: Record<string, unknown>,
    private readonly file: string,
  ) {}

  private get(name: string, fallback: unknown, what: string): unknown {
    const v = this.json[name]
    if (v === undefined || v === null) {
      if (fallback === undefined) throw inputError(this.file, `missing field "${name}" (${what})`)
      return fallback
    }
    return v
  }

  posInt(name: string, fallback?: number): number {
    const v = this.get(name, fallback, "a positive integer")
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) throw inputError(this.file, `field "${name}": expected a positive integer, got ${JSON.stringify(v)}`)
    return v
  }

  posNumber(name: string, fallback?: number): number {
    const v = this.get(name, fallback, "a positive number")
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) throw inputError(this.file, `field "${name}": expected a positive number, got ${JSON.stringify(v)}`)
    return v
  }

  bool(name: string, fallback?: boolean): boolean {
    const v = this.get(name, fallback, "true or false")
    if (typeof v !== "boolean") throw inputError(this.file, `field "${name}": expected true or false, got ${JSON.stringify(v)}`)
    return v
  }

  str(name: string, fallback?: string): string {
    const v = this.get(name, fallback, "a string")
    if (typeof v !== "string") throw inputError(this.file, `field "${name}": expected a string, got ${JSON.stringify(v)}`)
    return v
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)
