/**
 * The llama family as a model-family contribution (plugins/models/family.ts): LLaMA, Mistral, Phi-3 and
 * Qwen2 folders (config.ts), their memory at a length, loading (model.ts), training (train.ts).
 */
import type { GpuRuntime } from "../../../kernels/runtime.ts"
import type { HostWeights } from "../../../training/model.ts"
import type { InspectedModel, InspectOptions, MemoryPlan, ModelConfig, ModelFamily } from "../family.ts"
import { type LlamaConfig, parseLlamaConfig, readLlamaConfig, SUPPORTED_ARCHITECTURES } from "./config.ts"
import { checkSequence, DEFAULT_CHUNK, type InspectedLlama, inspectLlama, loadLlama } from "./model.ts"
import { createTrainableLlama } from "./train.ts"

/** model_type of folders without `architectures`. */
export const MODEL_TYPES: Readonly<Record<string, (typeof SUPPORTED_ARCHITECTURES)[number]>> = {
  llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", phi3: "Phi3ForCausalLM", qwen2: "Qwen2ForCausalLM",
}

const recognizes = (config: Readonly<Record<string, unknown>>): boolean => {
  const archs = config["architectures"]
  if (Array.isArray(archs) && archs.length > 0) return SUPPORTED_ARCHITECTURES.some((a) => archs.includes(a))
  return typeof config["model_type"] === "string" && config["model_type"] in MODEL_TYPES
}

/** The folder as the llama plugin reads it; `fullAttention` drops the sliding window (there is only full attention). */
export function inspectLlamaModel(dir: string, options: InspectOptions = {}): InspectedModel<LlamaConfig> & InspectedLlama {
  const m = inspectLlama(dir, options)
  const config = options.fullAttention === true && m.config.slidingWindow !== undefined ? { ...m.config, slidingWindow: undefined } : m.config
  return { ...m, config, checkSequence: (tokens, source) => checkSequence(config, tokens, source) }
}

/** Logit rows per lm_head block in inference (model.ts caps rows × vocab at 16M floats). */
const LOGIT_FLOATS = 16 * 1024 * 1024

/** f32 on the device: every weight, one K and one V cache per layer, one chunk's activations and logits. */
export function llamaMemory(model: InspectedModel, length: number, options: { readonly chunk?: number } = {}): MemoryPlan {
  const c = model.config as LlamaConfig
  const D = c.hiddenSize
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  const I = c.intermediateSize
  const V = c.vocabSize
  const perLayer = 2 * D + D * (qDim + 2 * kvDim) + qDim * D + 3 * D * I + (c.qkvBias ? qDim + 2 * kvDim : 0) + (c.oBias ? D : 0) + (c.mlpBias ? 2 * I + D : 0)
  const weights = 4 * (V * D * (c.tieWordEmbeddings ? 1 : 2) + D + c.numLayers * perLayer)
  const kvRow = 4 * kvDim
  const kvCache = 2 * c.numLayers * length * kvRow
  const chunk = Math.min(length, options.chunk ?? DEFAULT_CHUNK)
  const rows = Math.max(1, Math.min(chunk, Math.floor(LOGIT_FLOATS / V)))
  const activations = 4 * (chunk * (3 * D + qDim + 2 * kvDim + 2 * I) + rows * V)
  return {
    weights,
    kvCache,
    activations,
    total: weights + kvCache + activations,
    largestBinding: { bytes: 4 * V * D, what: `the embedding table (${V} × ${D})` },
    largestBuffer: { bytes: length * kvRow, what: `one layer's K cache (${length} tokens × ${kvDim})` },
  }
}

/** What identifies interchangeable weights; a training checkpoint with another one is refused. */
export const llamaArchitecture = (c: LlamaConfig) => ({
  architecture: c.architecture, hidden: c.hiddenSize, intermediate: c.intermediateSize, layers: c.numLayers,
  heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, vocab: c.vocabSize, tied: c.tieWordEmbeddings,
  qkvBias: c.qkvBias, oBias: c.oBias, mlpBias: c.mlpBias,
})

export const llamaFamily: ModelFamily = {
  name: "llama",
  description: "LLaMA, Mistral, Phi-3, Qwen2: RMSNorm, SwiGLU MLP, rotate-half RoPE, GQA (transformers' semantics)",
  architectures: SUPPORTED_ARCHITECTURES,
  recognizes,
  readConfig: (dir, options = {}) => readLlamaConfig(dir, options),
  inspect: inspectLlamaModel,
  memory: llamaMemory,
  // a model inspected elsewhere (another options set) is read again from its folder
  load: (rt: GpuRuntime, m: InspectedModel) => loadLlama(rt, "checkpoint" in m ? (m as unknown as InspectedLlama) : m.config.dir),
  trainable: (rt: GpuRuntime, config: ModelConfig, weights: string | HostWeights) =>
    Object.assign(createTrainableLlama(rt, config as LlamaConfig, weights), { architecture: llamaArchitecture(config as LlamaConfig) }),
  parseConfig: (json, file, dir) => parseLlamaConfig(json, file, dir),
}
