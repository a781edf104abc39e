/**
 * A deterministic random GPT-NeoX (Pythia-shaped) Hugging Face folder: config.json + model.safetensors,
 * from a seed. Not a trained model: its numbers show the pipeline works and how RoPE settings change a
 * fixed function.
 */
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { Rng, type TensorToWrite, writeCheckpoint, writeFileAtomic } from "../../../plugins/api.ts"
import { ARCHITECTURE, neoxTensors, parseNeoxConfig } from "./config.ts"

export interface RandomNeoxOptions {
  readonly vocab: number
  readonly hidden: number
  readonly layers: number
  readonly heads: number
  readonly intermediate: number
  readonly maxPositions: number
  /** Share of each head's dims that rotate (Pythia: 0.25). */
  readonly rotaryPct?: number
  readonly parallelResidual?: boolean
  readonly seed: number
}

export function randomNeoxConfig(o: RandomNeoxOptions): Record<string, unknown> {
  return {
    architectures: [ARCHITECTURE], model_type: "gpt_neox", hidden_size: o.hidden, num_attention_heads: o.heads, num_hidden_layers: o.layers,
    intermediate_size: o.intermediate, vocab_size: o.vocab, max_position_embeddings: o.maxPositions, layer_norm_eps: 1e-5,
    rotary_pct: o.rotaryPct ?? 0.25, rotary_emb_base: 10000, use_parallel_residual: o.parallelResidual ?? true, hidden_act: "gelu",
    tie_word_embeddings: false, attention_bias: true, rope_scaling: null, torch_dtype: "float32",
  }
}

/** Uniform weights with std 1/√fan_in (norms near 1, biases small), so attention and the head are not flat. */
export function randomNeoxTensors(o: RandomNeoxOptions): TensorToWrite[] {
  const config = parseNeoxConfig(randomNeoxConfig(o), "random config.json", "")
  const rng = Rng.seeded(o.seed, 0x9e0c)
  return [...neoxTensors(config)].map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1)
    const isNorm = name.includes("layernorm") || name.includes("layer_norm")
    const std = name.endsWith(".bias") ? 0.02 : isNorm ? 0.1 : name === "gpt_neox.embed_in.weight" ? 1 : 1 / Math.sqrt(shape[1]!)
    const mean = isNorm && name.endsWith(".weight") ? 1 : 0
    const half = Math.sqrt(3) * std
    const data = new Float32Array(n)
    for (let i = 0; i < n; i++) data[i] = mean + (2 * rng.float() - 1) * half
    return { name, dtype: "F32" as const, shape, data }
  })
}

/** Writes config.json and model.safetensors into `dir`; returns the config. */
export function writeRandomNeox(dir: string, o: RandomNeoxOptions): Record<string, unknown> {
  mkdirSync(dir, { recursive: true })
  const config = randomNeoxConfig(o)
  writeCheckpoint(dir, randomNeoxTensors(o), { metadata: { format: "pt", ropeway: "random-init GPT-NeoX (untrained)" } })
  writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(config, null, 2)}\n`)
  return config
}
