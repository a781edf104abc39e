/**
 * The llama family as a model-family contribution (plugins/models/family.ts): LLaMA, Mistral, Phi-3 and
 * Qwen2 folders (config.ts), their memory at a length, loading (model.ts), training (train.ts).
 */
import type { GpuRuntime } from "../../../kernels/runtime.ts"
import type { HostWeights, TrainableOptions } from "../../../training/model.ts"
import type { InspectedModel, InspectOptions, ModelConfig, ModelFamily } from "../family.ts"
import { type LlamaConfig, parseLlamaConfig, readLlamaConfig, SUPPORTED_ARCHITECTURES } from "./config.ts"
import { llamaMemory } from "./memory.ts"
import { checkSequence, type InspectedLlama, inspectLlama, loadLlama } from "./model.ts"
import { createTrainableLlama, loraTargetsOf } from "./train.ts"

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
  trainable: (rt: GpuRuntime, config: ModelConfig, weights: string | HostWeights, options: TrainableOptions = {}) => {
    const c = config as LlamaConfig
    const lora = options.lora
    const model = createTrainableLlama(rt, c, weights, lora === undefined ? {} : {
      lora: { config: { rank: lora.rank, alpha: lora.alpha, seed: lora.seed }, targets: lora.targets, dropout: lora.dropout, trainNorms: lora.trainNorms === true, trainEmbeddings: lora.trainEmbeddings === true },
    })
    // a checkpoint resumes only into the same weights and the same adapters
    const architecture = lora === undefined ? llamaArchitecture(c) : { ...llamaArchitecture(c), lora: { rank: lora.rank, alpha: lora.alpha, targets: [...lora.targets], trainNorms: lora.trainNorms === true, trainEmbeddings: lora.trainEmbeddings === true } }
    return Object.assign(model, { architecture })
  },
  loraTargets: (config: ModelConfig) => loraTargetsOf(config as LlamaConfig),
  parseConfig: (json, file, dir) => parseLlamaConfig(json, file, dir),
}
