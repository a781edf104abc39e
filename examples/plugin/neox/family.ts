/**
 * The GPT-NeoX family (Pythia): a model-family contribution written against ropeway's public plugin API
 * only, as a user's plugin would be. It recognises `GPTNeoXForCausalLM` folders, states its memory at a
 * length, and loads them for log-probs (chunked) and generation (KV cache). No training: the contract's
 * `trainable` is optional.
 */
import { Checkpoint, type GpuRuntime, type InspectedModel, type InspectOptions, inputError, type MemoryPlan, type ModelFamily } from "../../../plugins/api.ts"
import { resolveRope } from "../../../plugins/api.ts"
import { ARCHITECTURE, type NeoxConfig, parseNeoxConfig, readNeoxConfig } from "./config.ts"
import { chunkFor, loadNeox } from "./model.ts"
import { validateNeox } from "./weights.ts"

export interface InspectedNeox extends InspectedModel<NeoxConfig> {
  readonly checkpoint: Checkpoint
}

export function inspectNeox(dir: string, options: InspectOptions = {}): InspectedNeox {
  const config = readNeoxConfig(dir, options)
  const checkpoint = Checkpoint.open(dir)
  validateNeox(config, checkpoint)
  const checkSequence = (tokens: Uint32Array | readonly number[], source = "tokens"): void => {
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!
      if (!Number.isInteger(t) || t < 0 || t >= config.vocabSize) throw inputError(source, `token ${t} at index ${i} is outside the vocabulary (vocab_size ${config.vocabSize})`)
    }
  }
  return { config, checkpoint, rope: resolveRope(config.rope, options.ropeSource), checkSequence }
}

/** f32 on the device: weights, a K and a V cache per layer, one chunk's activations and logits. */
export function neoxMemory(model: InspectedModel, length: number, options: { readonly chunk?: number } = {}): MemoryPlan {
  const c = model.config as NeoxConfig
  const D = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize
  const weights = 4 * (2 * V * D + 2 * D + c.numLayers * (4 * D + 4 * D * D + 4 * D + 2 * D * I + I + D))
  const kvCache = 2 * c.numLayers * length * 4 * D
  const chunk = Math.min(length, chunkFor(c, options.chunk))
  const activations = 4 * chunk * (6 * D + 2 * I + V)
  return {
    weights, kvCache, activations, total: weights + kvCache + activations,
    largestBinding: { bytes: 4 * V * D, what: `the embedding table (${V} × ${D})` },
    largestBuffer: { bytes: 4 * length * D, what: `one layer's K cache (${length} tokens × ${D})` },
  }
}

const recognizes = (config: Readonly<Record<string, unknown>>): boolean => {
  const archs = config["architectures"]
  return Array.isArray(archs) ? archs.includes(ARCHITECTURE) : config["model_type"] === "gpt_neox"
}

export const neoxFamily: ModelFamily = {
  name: "gpt-neox",
  description: "GPT-NeoX / Pythia: LayerNorm with bias, parallel attention and GELU MLP, rotary on 25% of each head (NeoX half layout)",
  architectures: [ARCHITECTURE],
  recognizes,
  readConfig: (dir, options = {}) => readNeoxConfig(dir, options),
  inspect: inspectNeox,
  memory: neoxMemory,
  // a model inspected elsewhere is read again from its folder
  load: (rt: GpuRuntime, m: InspectedModel) => loadNeox(rt, "checkpoint" in m ? (m as InspectedNeox) : inspectNeox(m.config.dir)),
  parseConfig: (json, file, dir) => parseNeoxConfig(json, file, dir),
}
