/**
 * What the training loop drives: a model with named trainable parameters and a loss with gradients for
 * one sequence. A model family implements it (plugins/models/llama/train.ts); training/ knows no family.
 */
import type { RopeTable } from "../kernels/rope-table.ts"
import type { Tensor } from "../kernels/tensor.ts"
import type { TensorToWrite } from "../common/safetensors.ts"
import type { Json } from "./checkpoint.ts"
import type { ParamInit } from "./optimizer.ts"

/** Host weights by HF name. */
export type HostWeights = ReadonlyMap<string, Float32Array>

export interface TrainBatch {
  /** T+1 token ids: inputs are tokens[0..T−1], targets tokens[1..T]. Or give `inputs` and `targets`. */
  readonly tokens?: ArrayLike<number>
  readonly inputs?: ArrayLike<number>
  readonly targets?: ArrayLike<number>
  /** Position id of each input token (T values; they may restart per packed document); default 0..T−1. */
  readonly positions?: ArrayLike<number>
  /** The RoPE factor set this sequence uses. */
  readonly rope: RopeTable
  /**
   * Per target (T values), its weight in the loss: 0 = not scored (HF's −100 label), 1 = scored, other
   * values weigh it more or less (answer tokens). loss = Σ w·NLL / Σ w. Default: all 1.
   */
  readonly labelMask?: ArrayLike<number>
  /**
   * Document id per input token (T values): a query attends only to keys of its own document (packed
   * sequences). Default: one document (plain causal attention, as HF does with position ids alone).
   */
  readonly segments?: ArrayLike<number>
}

export interface GradOptions {
  /**
   * Where each trainable parameter's gradient accumulates (+=), by name; e.g. `(n) => optimizer.grad(n)`.
   * Only names in `params` are asked; returning undefined freezes that parameter for this call.
   */
  readonly grads: (name: string) => Tensor | undefined
  /** The gradient added is scale·∇loss (gradient accumulation: 1/steps); default 1. */
  readonly scale?: number
}

export interface LossResult {
  /** Mean NLL over the scored targets (0 when none is scored). */
  readonly loss: number
  /** Scored targets. */
  readonly tokens: number
}

export interface TrainableModel {
  /** What identifies interchangeable weights: a training checkpoint that records another is refused. */
  readonly architecture?: Json
  /** The trainable parameters, HF names, in checkpoint order (norms and biases without weight decay). */
  readonly params: readonly ParamInit[]
  /** Forward (and, with `grad`, backward) of one sequence. */
  lossAndGrad(batch: TrainBatch, grad?: GradOptions): Promise<LossResult>
  /** The weights in the checkpoint's own layout, F32, for writing the trained folder. */
  hfTensors(): Promise<TensorToWrite[]>
  dispose(): void
}
