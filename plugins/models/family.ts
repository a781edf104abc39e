/**
 * The model-family contract: what a plugin contributes (`families: [...]`) so that every stage, command
 * and worker can use a kind of model it has never heard of. The llama family (./llama/family.ts) is the
 * built-in one; examples/plugin adds a GPT-NeoX one through the same contract.
 *
 * A family
 * - recognises a Hugging Face folder by its config.json (`recognizes`: architectures / model_type);
 * - reads it without the GPU (`inspect`: config, tensor headers, the RoPE method), so bad input fails fast;
 * - states what it needs on the device at a length before loading (`memory`), so a model that does not fit
 *   is refused with the numbers;
 * - loads it (`load`) into a model that gives next-token log-probabilities under any RoPE table, in chunks
 *   (memory linear in length), optionally a KV-cache session for generation and full distributions;
 * - optionally trains (`trainable`: the loss and its gradients, for training/'s loop).
 */
import type { RopeTable } from "../../kernels/rope-table.ts"
import type { GpuRuntime } from "../../kernels/runtime.ts"
import type { ModelFamilyContribution } from "../../pipeline/workflow/plugin.ts"
import type { HostWeights, TrainableModel, TrainableOptions } from "../../training/model.ts"
import type { ChosenTable, RopeSpec } from "../rope/types.ts"

/** What every family's config says (a family's own config type extends it). */
export interface ModelConfig {
  /** The folder and its config.json (errors name these). */
  readonly dir: string
  readonly file: string
  /** The architecture config.json names (e.g. LlamaForCausalLM, GPTNeoXForCausalLM). */
  readonly architecture: string
  readonly hiddenSize: number
  readonly numLayers: number
  readonly vocabSize: number
  readonly rope: RopeSpec
}

export interface InspectOptions {
  /** An HF rope_scaling object that replaces config.json's (null: plain RoPE). */
  readonly ropeScaling?: Readonly<Record<string, unknown>> | null
  /** What RoPE errors name (e.g. "--rope-scaling" when the scaling came from the command line). */
  readonly ropeSource?: string
  /** Ignore a sliding window: full attention at every length (the search's `slidingWindow: null`). */
  readonly fullAttention?: boolean
}

/** A folder read and checked without the GPU. */
export interface InspectedModel<C extends ModelConfig = ModelConfig> {
  readonly config: C
  /** The RoPE table for an input length (config.json's rope_scaling, or the override). */
  readonly rope: (length: number) => ChosenTable
  /** Throws an InputError naming `source` for a sequence this model cannot run (ids outside the vocabulary, too long). */
  readonly checkSequence: (tokens: Uint32Array | readonly number[], source?: string) => void
}

/** What a memory plan reads: the config, and the inspected folder when there is one (its file dtypes). */
export type PlannedModel = Pick<InspectedModel, "config"> | InspectedModel

/** What a run will train, for the memory plan: every weight, or LoRA adapters (plus LongLoRA's norms and embeddings). */
export type TrainPlan =
  | { readonly mode: "full" }
  | {
      readonly mode: "lora"
      readonly rank: number
      /** Module names (the family's `loraTargets`). */
      readonly targets: readonly string[]
      readonly trainNorms?: boolean
      readonly trainEmbeddings?: boolean
    }

/**
 * The kernels a plan counts the layouts of: the adapter profile's (the cpu kernels copy operands and K/V
 * into textures, pad outputs and keep weights as textures; the gpu kernels read storage in place), and the
 * device limits that shape those layouts (texture heights, weights' column parts).
 */
export interface PlanKernels {
  readonly profile: "cpu" | "gpu"
  readonly maxTextureDimension2D: number
  readonly maxStorageBufferBindingSize: number
  readonly maxBufferSize: number
}

export interface MemoryOptions {
  /** Tokens per forward chunk (inference). */
  readonly chunk?: number
  /** The kernels that will run (checkFits and longestFit take them from the device budget); default: the cpu kernels, whose layouts are the larger, at WebGPU's default limits. */
  readonly kernels?: PlanKernels
  /** The KV cache's element type (default: the family's, e.g. the weights' precision). */
  readonly kvCache?: "f32" | "f16" | "bf16"
  /** Plan a training step of `length` tokens instead of scoring. */
  readonly train?: TrainPlan
}

/** One named part of a plan, in bytes. */
export interface PlanPart {
  readonly bytes: number
  readonly what: string
}

/**
 * Memory a model needs at one length, in bytes, stated before anything is loaded: what lives on the
 * device, what the host holds besides while loading, and the largest single buffers (what per-buffer
 * limits refuse). `ropeway inspect` prints it; every stage checks it (plugins/models/memory.ts).
 */
export interface MemoryPlan {
  readonly length: number
  /** The weights as they sit on the device (their dtype there, padding included). */
  readonly weights: number
  readonly kvCache: number
  /** Working buffers of one forward chunk (activations, one block of logits), or of one training step. */
  readonly activations: number
  /** Training only: gradients, optimizer moments and LoRA adapters (their values). */
  readonly gradients?: number
  readonly optimizer?: number
  readonly lora?: number
  /** Everything on the device: the sum of the above. */
  readonly total: number
  /** Host memory used besides while loading (one tensor being read and converted at a time). */
  readonly hostStaging: number
  /** The largest buffer a kernel binds whole (e.g. the embedding table), against maxStorageBufferBindingSize. */
  readonly largestBinding: PlanPart
  /** The largest buffer allocated (e.g. one layer's K cache), against maxBufferSize. */
  readonly largestBuffer: PlanPart
}

/** How a model keeps its KV cache (families that page or narrow their caches read these). */
export interface KvOptions {
  /** The cache's element type: f32, or f16 / bf16 (a family's default: its weights' precision). */
  readonly kvCache?: "f32" | "f16" | "bf16"
  /** Rows per cache page (tests force small pages; a family may round it up to what its kernels need). */
  readonly pageRows?: number
}

export interface LogprobsOptions extends KvOptions {
  /** The RoPE table (callers choose it: the model's own is `rope(length)`). */
  readonly rope: RopeTable
  /** Tokens per forward chunk. */
  readonly chunk?: number
  /** What token errors name (the tokens file). */
  readonly source?: string
}

/**
 * Incremental decoding over a KV cache. The cached keys were all rotated with one table, `table`; feeding
 * with another table first needs `rerotate` (O(cache)) or `reset` (re-prefill).
 */
export interface DecodeSession {
  /** Tokens in the cache (the next token fed sits at this position). */
  readonly length: number
  readonly capacity: number
  /** The table the cached keys carry (undefined while the cache is empty). */
  readonly table: RopeTable | undefined
  /** Runs `tokens` at positions length.., appends their K/V; ln p(next token) over the vocabulary, float64. */
  feed(tokens: Uint32Array | readonly number[], table: RopeTable, options?: { readonly chunk?: number; readonly source?: string }): Promise<Float64Array>
  /** Turns every cached key into what `table` would have made of it (optional: `generate --policy rerotate`). */
  rerotate?(table: RopeTable): void
  /** Empties the cache (the buffers are kept). */
  reset(): void
  dispose(): void
}

/** A block of rows from `distributions`: `rows[k]` holds `count` rows of `vocab` ln-probs under table k, for positions from.. */
export type DistributionRows = (from: number, count: number, rows: readonly Float64Array[]) => void | Promise<void>

/** A model on the device. */
export interface LoadedModel {
  readonly config: ModelConfig
  readonly rope: (length: number) => ChosenTable
  /** `out[i] = ln p(tokens[i+1] | tokens[0..i])`, length n−1, in float64. */
  logprobs(tokens: Uint32Array | readonly number[], options: LogprobsOptions): Promise<Float64Array>
  /** A KV-cache session for generation of up to `capacity` tokens (absent: the family cannot generate). */
  session?(capacity: number, options?: KvOptions): DecodeSession
  /** Full next-token distributions at every position under several tables (short-context KL). */
  distributions?(tokens: Uint32Array | readonly number[], tables: readonly RopeTable[], onRows: DistributionRows, options?: { readonly chunk?: number }): Promise<void>
  dispose(): void
}

export interface ModelFamily extends ModelFamilyContribution {
  readonly name: string
  readonly description: string
  /** The architectures it reads (config.json `architectures`), for messages and listings. */
  readonly architectures: readonly string[]
  /** Whether the family reads a folder with this config.json. */
  readonly recognizes: (config: Readonly<Record<string, unknown>>) => boolean
  /** config.json alone (no weights needed): shapes and the RoPE spec, for what only reads the RoPE settings. */
  readonly readConfig: (dir: string, options?: InspectOptions) => ModelConfig
  readonly inspect: (dir: string, options?: InspectOptions) => InspectedModel
  /**
   * What it needs at `length` tokens (growing with length: the longest length that fits is searched for).
   * `model` is an inspected folder, or only a config (a model made from scratch, as `pretrain` does).
   */
  readonly memory: (model: PlannedModel, length: number, options?: MemoryOptions) => MemoryPlan
  readonly load: (rt: GpuRuntime, model: InspectedModel) => Promise<LoadedModel>
  /** The model for training: `weights` a folder or host tensors by HF name; every weight trains, or with `lora` adapters. */
  readonly trainable?: (rt: GpuRuntime, config: ModelConfig, weights: string | HostWeights, options?: TrainableOptions) => TrainableModel
  /** The module names LoRA can adapt in a model of this config (`lora.targets` is checked against them). */
  readonly loraTargets?: (config: ModelConfig) => readonly string[]
  /** A config.json parsed as this family (`pretrain`'s shape params, without a folder). */
  readonly parseConfig?: (json: unknown, file: string, dir: string) => ModelConfig
}

export const isModelFamily = (u: unknown): u is ModelFamily =>
  typeof u === "object" && u !== null && ["recognizes", "readConfig", "inspect", "memory", "load"].every((k) => typeof (u as Record<string, unknown>)[k] === "function")
