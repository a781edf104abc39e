/**
 * The trainable llama-family model: f32 parameters in storage tensors under their Hugging Face names,
 * and a layer-wise forward/backward with activation recomputation.
 *
 * Memory: the forward keeps each layer's input (the residual stream [T, D]) and the internals of as many
 * of the last layers as fit a budget (`keepActivationBytes`, default 512 MiB; at least the last layer,
 * whose backward comes first); the backward recomputes any other layer's internals from its saved input
 * just before that layer's backward. Recomputing gives the same values (same kernels, same inputs), so
 * the budget changes speed and memory, never results. Attention is the flash kernel pair (lse saved,
 * never T×T) and the lm_head runs in row chunks (never more than ~4M logits at once), so a step needs
 * O(L·T·D) + O(k·T·(D + I)) for k kept layers + weights and gradients: linear in T.
 *
 * Gradients accumulate (+=) into tensors the caller provides (e.g. the Optimizer's `grad(name)`), scaled
 * by `scale` (gradient accumulation's 1/steps), which is folded into the cross-entropy row weights so no
 * extra pass over the gradients is needed. With `lora`, the base weights are frozen and the trainable
 * parameters are PEFT-named adapters (plus, optionally, norms and embeddings as in LongLoRA).
 * Semantics are transformers' (rotate_half RoPE, GQA, RMSNorm, SwiGLU, tied head); the loss is the mean
 * next-token NLL over the scored targets.
 */
import { addInPlace } from "../../../kernels/add.ts"
import { type TrainAttentionOptions, attentionBackward, attentionTrain } from "../../../kernels/attention-backward.ts"
import { crossEntropyBackward } from "../../../kernels/cross-entropy-backward.ts"
import { embed } from "../../../kernels/embedding.ts"
import { embeddingBackward } from "../../../kernels/embedding-backward.ts"
import { logprobsFromLogits } from "../../../kernels/logprobs.ts"
import { matmul } from "../../../kernels/matmul.ts"
import { rmsnorm } from "../../../kernels/rmsnorm.ts"
import { rmsnormBackward } from "../../../kernels/rmsnorm-backward.ts"
import { type GpuRopeTable, applyRope, releaseRopeTable, uploadRopeTable } from "../../../kernels/rope.ts"
import { applyRopeBackward, inverseRopeTable } from "../../../kernels/rope-backward.ts"
import type { GpuRuntime } from "../../../kernels/runtime.ts"
import { axpyInPlace, fill } from "../../../kernels/scale.ts"
import { dropout } from "../../../kernels/dropout.ts"
import { mixSeed } from "../../../common/rng.ts"
import { settleTuning } from "../../../kernels/tuning.ts"
import { swiglu } from "../../../kernels/swiglu.ts"
import { swigluBackward } from "../../../kernels/swiglu-backward.ts"
import { type Tensor, numel, shapeString } from "../../../kernels/tensor.ts"
import { inputError } from "../../../common/errors.ts"
import { type LoraAdapter, type LoraConfig, addLoraForward, createLora, loraParams, mergeLoraHost, releaseLora } from "../../../training/lora.ts"
import type { GradOptions, HostWeights, LossResult, TrainableModel, TrainBatch } from "../../../training/model.ts"
import type { ParamInit } from "../../../training/optimizer.ts"
import { Checkpoint, type TensorSource, type TensorToWrite } from "../../../common/safetensors.ts"
import type { LlamaConfig } from "./config.ts"
import { checkTokens, openWeights } from "./model.ts"
import { type HostLayer, layerPrefix, readLayer, unfusedLayer, validateCheckpoint } from "./weights.ts"

/** Logit rows per lm_head chunk are capped so rows × vocab stays under this many floats (16 MiB). */
export const LOGIT_FLOATS = 4 * 1024 * 1024
/** Default budget for layers' internals kept from the forward instead of recomputed in the backward. */
export const KEEP_ACTIVATION_BYTES = 512 * 1024 * 1024

/** Host weights by HF name, unfused (q_proj/k_proj/v_proj, gate_proj/up_proj, even for Phi-3). */
export type { GradOptions, HostWeights, LossResult, TrainBatch } from "../../../training/model.ts"

export interface TrainableLlama extends TrainableModel {
  readonly config: LlamaConfig
  /**
   * The trainable parameters, HF names, in checkpoint order (norms and biases without weight decay):
   * every weight, or with `lora` the adapters (and the norms / embeddings asked for).
   */
  readonly params: readonly ParamInit[]
  /** Any tensor by name: a base weight (trainable or frozen) or an adapter's A / B. */
  param(name: string): Tensor
  /** Forward (and, with `grad`, backward) of one sequence. */
  lossAndGrad(batch: TrainBatch, grad?: GradOptions): Promise<LossResult>
  /** The weights in the checkpoint's own layout (Phi-3's projections fused again, LoRA merged in), F32. */
  hfTensors(): Promise<TensorToWrite[]>
  /** The trainable parameters by name (with LoRA: the adapters, PEFT-named, and the norms / embeddings trained), F32. */
  trainedTensors(): Promise<TensorToWrite[]>
  dispose(): void
}

interface LayerParams {
  readonly inputNorm: Tensor
  readonly q: Tensor
  readonly k: Tensor
  readonly v: Tensor
  readonly o: Tensor
  readonly qBias: Tensor | undefined
  readonly kBias: Tensor | undefined
  readonly vBias: Tensor | undefined
  readonly oBias: Tensor | undefined
  readonly postNorm: Tensor
  readonly gate: Tensor
  readonly up: Tensor
  readonly down: Tensor
  readonly gateBias: Tensor | undefined
  readonly upBias: Tensor | undefined
  readonly downBias: Tensor | undefined
}

/** Names of a layer's parameters, by LayerParams field. */
const LAYER_NAMES: Readonly<Record<keyof LayerParams, string>> = {
  inputNorm: "input_layernorm.weight",
  q: "self_attn.q_proj.weight",
  k: "self_attn.k_proj.weight",
  v: "self_attn.v_proj.weight",
  o: "self_attn.o_proj.weight",
  qBias: "self_attn.q_proj.bias",
  kBias: "self_attn.k_proj.bias",
  vBias: "self_attn.v_proj.bias",
  oBias: "self_attn.o_proj.bias",
  postNorm: "post_attention_layernorm.weight",
  gate: "mlp.gate_proj.weight",
  up: "mlp.up_proj.weight",
  down: "mlp.down_proj.weight",
  gateBias: "mlp.gate_proj.bias",
  upBias: "mlp.up_proj.bias",
  downBias: "mlp.down_proj.bias",
}

/** One layer's internals, recomputed from its input. q and k are already rotated. */
interface LayerActs {
  h1: Tensor
  q: Tensor
  k: Tensor
  v: Tensor
  o: Tensor
  lse: Tensor
  x1: Tensor
  h2: Tensor
  g: Tensor
  u: Tensor
  m: Tensor
}

/** Document ids from position ids: a new document wherever a position does not follow the previous one. */
export function segmentsFromPositions(positions: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(positions.length)
  let seg = 0
  for (let t = 1; t < positions.length; t++) {
    if (positions[t] !== positions[t - 1]! + 1) seg++
    out[t] = seg
  }
  return out
}

/** Projections LoRA can adapt, by their HF module name. */
export type LoraTarget = "q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj"

type LinField = "q" | "k" | "v" | "o" | "gate" | "up" | "down"

const LIN_FIELDS: Readonly<Record<LoraTarget, LinField>> = {
  q_proj: "q", k_proj: "k", v_proj: "v", o_proj: "o", gate_proj: "gate", up_proj: "up", down_proj: "down",
}
/** The projections in a fixed order (dropout streams are keyed by the index). */
const LIN_ORDER: readonly LinField[] = ["q", "k", "v", "o", "gate", "up", "down"]
const BIAS_OF: Readonly<Record<LinField, keyof LayerParams>> = {
  q: "qBias", k: "kBias", v: "vBias", o: "oBias", gate: "gateBias", up: "upBias", down: "downBias",
}

/** The modules LoRA can adapt in a model of this config (Phi-3's fused q/k/v and gate/up are not split in its files). */
export const loraTargetsOf = (c: Pick<LlamaConfig, "fused">): readonly LoraTarget[] =>
  c.fused ? ["o_proj", "down_proj"] : (Object.keys(LIN_FIELDS) as LoraTarget[])

/** Throws an InputError naming `where` when a target names no module LoRA can adapt here. */
export function checkLoraTargets(c: Pick<LlamaConfig, "fused" | "file">, targets: readonly string[], where: string): asserts targets is readonly LoraTarget[] {
  const known = loraTargetsOf(c)
  for (const t of targets) {
    if (!(known as readonly string[]).includes(t)) {
      const why = c.fused && t in LIN_FIELDS ? ` (this model's ${c.file} fuses q/k/v and gate/up)` : ""
      throw inputError(where, `LoRA target "${t}" names no module of the model${why}; known: ${known.join(", ")}`)
    }
  }
}

export interface TrainableOptions {
  /** Rows per lm_head chunk (default: as many as keep rows × vocab ≤ 4M floats). */
  readonly logitRows?: number
  /**
   * Bytes of layer internals the forward may keep for the backward instead of recomputing them (default
   * 512 MiB); the last layer's are always kept. 0 recomputes every other layer (the least memory).
   */
  readonly keepActivationBytes?: number
  /**
   * LoRA instead of full fine-tuning: adapters (PEFT names, `….q_proj.lora_A.weight`) on `targets`, the
   * base weights frozen. LongLoRA's trainable norms and embeddings are options (`model.embed_tokens`
   * only, as LongLoRA: an untied lm_head stays frozen). `dropout` is PEFT's lora_dropout: the adapter's
   * input dropped with that probability while training (a mask per batch `dropoutSeed`, layer and module).
   */
  readonly lora?: {
    readonly config: LoraConfig
    readonly targets: readonly string[]
    readonly dropout?: number
    readonly trainNorms?: boolean
    readonly trainEmbeddings?: boolean
  }
}

/** The base weights as uploaded: each owned (released on dispose), by name and in checkpoint order. */
class BaseWeights {
  readonly owned: Tensor[] = []
  readonly params: ParamInit[] = []
  /** Every tensor by name: base weights, and (once added) the adapters' A and B. */
  readonly byName = new Map<string, Tensor>()
  constructor(private readonly rt: GpuRuntime) {}

  put(name: string, data: Float32Array, shape: readonly number[], weightDecay: boolean): Tensor {
    const n = shape.reduce((a, b) => a * b, 1)
    if (data.length !== n) throw inputError(name, `has ${data.length} values, expected [${shape.join(", ")}]`)
    const t = this.rt.upload(data, shape)
    this.owned.push(t)
    this.params.push({ name, value: t, weightDecay })
    this.byName.set(name, t)
    return t
  }
}

/** The weights a step reads. */
interface ModelWeights {
  readonly embedTable: Tensor
  readonly layers: readonly LayerParams[]
  readonly finalNorm: Tensor
  readonly head: Tensor
}

/** The trainable model: its config, weights and adapters, and which tensors train; `disposed` is set once, by dispose(). */
interface TrainModel extends ModelWeights {
  readonly rt: GpuRuntime
  readonly c: LlamaConfig
  readonly options: TrainableOptions
  readonly adapters: ReadonlyMap<string, LoraAdapter>
  /** Names of the trainable tensors. */
  readonly trainable: ReadonlySet<string>
  readonly dropoutP: number
  disposed: boolean
}

/**
 * Loads weights (a model folder, an opened checkpoint, or host tensors by HF name) as f32 tensors. Every
 * weight is a trainable parameter, or with `lora` the adapters (and optionally norms and embeddings).
 */
export function createTrainableLlama(rt: GpuRuntime, config: LlamaConfig, source: string | TensorSource | HostWeights, options: TrainableOptions = {}): TrainableLlama {
  const c = config
  const lora = options.lora
  // before anything is read or allocated
  if (lora !== undefined) checkLoraTargets(c, lora.targets, "lora.targets")
  const dropoutP = lora?.dropout ?? 0
  if (!(dropoutP >= 0 && dropoutP < 1)) throw inputError("lora.dropout", `must be in [0, 1), got ${dropoutP}`)

  const base = new BaseWeights(rt)
  const adapters = new Map<string, LoraAdapter>()
  let weights: ModelWeights
  let params: ParamInit[]
  try {
    weights = uploadWeights(base, c, source)
    params = lora === undefined ? base.params : addAdapters(rt, lora, weights.layers, base, adapters)
  } catch (e) {
    rt.release(...base.owned)
    for (const a of adapters.values()) releaseLora(rt, a)
    throw e
  }
  const m: TrainModel = { rt, c, options, ...weights, adapters, trainable: new Set(params.map((p) => p.name)), dropoutP, disposed: false }
  return {
    config: c,
    params,
    param(name) {
      const t = base.byName.get(name)
      if (t === undefined) throw new Error(`trainable llama: no tensor "${name}"`)
      return t
    },
    lossAndGrad: (batch, grad) => lossAndGrad(m, batch, grad),
    hfTensors: () => hfTensors(m, base),
    trainedTensors: () => trainedTensors(rt, params),
    dispose() {
      if (m.disposed) return
      m.disposed = true
      rt.flush()
      rt.release(...base.owned)
      for (const a of adapters.values()) releaseLora(rt, a)
    },
  }
}

/** Uploads every base weight as f32 from a model folder, an opened checkpoint or host tensors by HF name. */
function uploadWeights(base: BaseWeights, c: LlamaConfig, source: string | TensorSource | HostWeights): ModelWeights {
  let read: (name: string) => Float32Array
  let layerOf: (i: number) => HostLayer
  if (typeof source === "string" || isTensorSource(source)) {
    const ckpt = typeof source === "string" ? openWeights(c, source) : source
    if (typeof source !== "string") validateCheckpoint(c, ckpt)
    read = (name) => ckpt.read(name)
    layerOf = (i) => readLayer(c, ckpt, i)
  } else {
    read = (name) => {
      const t = source.get(name)
      if (t === undefined) throw inputError("host weights", `missing tensor "${name}"`)
      return t
    }
    layerOf = (i) => unfusedLayer(c, i, read)
  }
  const [V, D] = [c.vocabSize, c.hiddenSize]
  const embedTable = base.put("model.embed_tokens.weight", read("model.embed_tokens.weight"), [V, D], true)
  const layers: LayerParams[] = []
  for (let i = 0; i < c.numLayers; i++) layers.push(uploadLayer(base, c, i, layerOf(i)))
  const finalNorm = base.put("model.norm.weight", read("model.norm.weight"), [D], false)
  const head = c.tieWordEmbeddings ? embedTable : base.put("lm_head.weight", read("lm_head.weight"), [V, D], true)
  return { embedTable, layers, finalNorm, head }
}

function uploadLayer(base: BaseWeights, c: LlamaConfig, i: number, h: HostLayer): LayerParams {
  const D = c.hiddenSize
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  const I = c.intermediateSize
  const p = layerPrefix(i)
  const put = (field: keyof LayerParams, data: Float32Array, shape: readonly number[], weightDecay: boolean): Tensor =>
    base.put(p + LAYER_NAMES[field], data, shape, weightDecay)
  const b = (field: keyof LayerParams, data: Float32Array | undefined, n: number): Tensor | undefined =>
    data === undefined ? undefined : put(field, data, [n], false)
  return {
    inputNorm: put("inputNorm", h.inputNorm, [D], false),
    q: put("q", h.q, [qDim, D], true),
    k: put("k", h.k, [kvDim, D], true),
    v: put("v", h.v, [kvDim, D], true),
    o: put("o", h.o, [D, qDim], true),
    qBias: b("qBias", h.qBias, qDim),
    kBias: b("kBias", h.kBias, kvDim),
    vBias: b("vBias", h.vBias, kvDim),
    oBias: b("oBias", h.oBias, D),
    postNorm: put("postNorm", h.postNorm, [D], false),
    gate: put("gate", h.gate, [I, D], true),
    up: put("up", h.up, [I, D], true),
    down: put("down", h.down, [D, I], true),
    gateBias: b("gateBias", h.gateBias, I),
    upBias: b("upBias", h.upBias, I),
    downBias: b("downBias", h.downBias, D),
  }
}

/** LoRA adapters on the targets of every layer (into `adapters`); returns the trainable parameters: the adapters and the norms / embeddings asked for. */
function addAdapters(rt: GpuRuntime, lora: NonNullable<TrainableOptions["lora"]>, layers: readonly LayerParams[], base: BaseWeights, adapters: Map<string, LoraAdapter>): ParamInit[] {
  const params: ParamInit[] = []
  const isNorm = (n: string): boolean => n.endsWith("layernorm.weight") || n === "model.norm.weight"
  for (const p of base.params) {
    if ((lora.trainNorms === true && isNorm(p.name)) || (lora.trainEmbeddings === true && p.name === "model.embed_tokens.weight")) params.push(p)
  }
  for (let i = 0; i < layers.length; i++) {
    for (const target of new Set(lora.targets as readonly LoraTarget[])) {
      const f = LIN_FIELDS[target]
      const module = moduleOf(i, f)
      const [outF, inF] = layers[i]![f].shape as [number, number]
      const a = createLora(rt, module, inF, outF, lora.config)
      adapters.set(module, a)
      for (const q of loraParams(a)) {
        params.push(q)
        base.byName.set(q.name, q.value)
      }
    }
  }
  return params
}

const moduleOf = (l: number, f: LinField): string => layerPrefix(l) + LAYER_NAMES[f].slice(0, -".weight".length)
const adapterOf = (m: TrainModel, l: number, f: LinField): LoraAdapter | undefined => (m.adapters.size === 0 ? undefined : m.adapters.get(moduleOf(l, f)))
const headName = (c: LlamaConfig): string => (c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight")

/** One lossAndGrad call's device state: its inputs, RoPE tables, gradient sinks, and the activations it holds. */
interface Step {
  readonly m: TrainModel
  readonly rt: GpuRuntime
  readonly T: number
  readonly ids: Tensor
  readonly posT: Tensor
  readonly table: GpuRopeTable
  /** The inverse table, for the backward (undefined for a forward only). */
  readonly inv: GpuRopeTable | undefined
  /** A [T, 1] column of ones: bias broadcasts and column sums are rank-1 matmuls against it. */
  readonly ones: Tensor
  readonly attnOpts: TrainAttentionOptions
  /** How many of the last layers keep their internals from the forward for the backward. */
  readonly keepLayers: number
  /** The gradient sink of a trainable tensor; undefined for frozen ones (or forward only). */
  readonly gradOf: (name: string) => Tensor | undefined
  /** Whether the adapters' inputs are dropped out (training with lora dropout). */
  readonly dropping: boolean
  readonly dropoutSeed: number
  /** Tensors released when the step ends. */
  readonly temps: Tensor[]
  /** Each layer's input (the residual stream), then the last layer's output. */
  readonly saved: Tensor[]
  /** Layers' internals kept from the forward for the backward (the last `keepLayers` layers). */
  readonly kept: (LayerActs | undefined)[]
}

/** Per-row weights of the loss: the label mask checked, the scored count and weight sum, and the CE backward's row weights. */
function lossWeights(mask: ArrayLike<number> | undefined, T: number, scale: number): { w: (t: number) => number; scored: number; weightSum: number; rowWeights: Float32Array } {
  if (mask !== undefined && mask.length !== T) throw new Error(`lossAndGrad: labelMask has ${mask.length} values, expected ${T}`)
  const w = (t: number): number => (mask === undefined ? 1 : mask[t]!)
  let scored = 0
  let weightSum = 0
  for (let t = 0; t < T; t++) {
    const x = w(t)
    if (!(x >= 0 && Number.isFinite(x))) throw new Error(`lossAndGrad: labelMask[${t}] is ${x}; weights must be finite and ≥ 0`)
    if (x !== 0) scored++
    weightSum += x
  }
  // The loss's weighted mean, the mask and the accumulation scale all become per-row weights of the CE backward.
  const rowWeights = new Float32Array(T)
  for (let t = 0; t < T; t++) rowWeights[t] = weightSum > 0 ? (scale * w(t)) / weightSum : 0
  return { w, scored, weightSum, rowWeights }
}

async function lossAndGrad(m: TrainModel, batch: TrainBatch, grad?: GradOptions): Promise<LossResult> {
  if (m.disposed) throw new Error("trainable llama: used after dispose()")
  const { rt, c } = m
  const { inputs, targets } = splitTokens(batch)
  const T = inputs.length
  checkTokens(inputs, c.vocabSize, "inputs")
  checkTokens(targets, c.vocabSize, "targets")
  if (T === 0) return { loss: 0, tokens: 0 }
  if (c.slidingWindow !== undefined && T > c.slidingWindow) {
    throw inputError(c.file, `sliding_window ${c.slidingWindow} is shorter than the ${T}-token sequence; sliding-window attention is not implemented`)
  }
  const positions = hostU32("positions", batch.positions ?? Uint32Array.from({ length: T }, (_, i) => i), T)
  const segments = batch.segments === undefined ? undefined : hostU32("segments", batch.segments, T)
  const { w, scored, weightSum, rowWeights } = lossWeights(batch.labelMask, T, grad?.scale ?? 1)
  const s = beginStep(m, batch, grad, inputs, positions, segments)
  try {
    const normed = forward(s)
    const { lpAll, dNormed } = headAndLoss(s, normed, targets, grad === undefined ? undefined : rowWeights)
    if (dNormed !== undefined) backward(s, dNormed)
    const lp = await rt.read(lpAll)
    let sum = 0
    for (let t = 0; t < T; t++) sum += w(t) * lp[t]!
    await settleTuning(rt) // shapes seen for the first time on this machine: time their variants now
    return { loss: weightSum > 0 ? -sum / weightSum : 0, tokens: scored, logprobs: lp }
  } finally {
    for (const a of s.kept) if (a !== undefined) releaseActs(rt, a)
    rt.release(...s.saved.splice(0), ...s.temps)
    releaseRopeTable(rt, s.table)
    if (s.inv !== undefined) rt.releaseBuffer(s.inv.buffer)
  }
}

/** Uploads a step's inputs and tables and sizes what it keeps. */
function beginStep(m: TrainModel, batch: TrainBatch, grad: GradOptions | undefined, inputs: Uint32Array, positions: Uint32Array, segments: Uint32Array | undefined): Step {
  const { rt, c } = m
  const T = inputs.length
  const temps: Tensor[] = []
  const keep = <X extends Tensor>(t: X): X => {
    temps.push(t)
    return t
  }
  const ids = keep(rt.upload(inputs))
  const posT = keep(rt.upload(positions))
  const segT = segments === undefined ? undefined : keep(rt.upload(segments))
  const table = uploadRopeTable(rt, batch.rope, c.numLayers)
  const inv = grad === undefined ? undefined : inverseRopeTable(rt, table)
  const ones = keep(rt.tensor([T, 1]))
  fill(rt, ones, 1)
  const [D, I, qDim, kvDim] = [c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim]
  const actBytes = 4 * T * (3 * D + 2 * qDim + 2 * kvDim + 3 * I + c.numHeads)
  const keepLayers = grad === undefined ? 0 : Math.max(1, Math.min(c.numLayers, Math.floor((m.options.keepActivationBytes ?? KEEP_ACTIVATION_BYTES) / actBytes)))
  const attnOpts = segT === undefined
    ? { heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim }
    : { heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, segments: segT }
  return {
    m, rt, T, ids, posT, table, inv, ones, attnOpts, keepLayers,
    gradOf: (name) => (grad !== undefined && m.trainable.has(name) ? grad.grads(name) : undefined),
    dropping: grad !== undefined && m.dropoutP > 0,
    dropoutSeed: batch.dropoutSeed ?? 0,
    temps, saved: [], kept: [],
  }
}

const keep = <X extends Tensor>(s: Step, t: X): X => {
  s.temps.push(t)
  return t
}

/** The dropout stream of (layer, module): the same mask every time it is asked (the recomputed forward, the backward). */
const dropSeed = (s: Step, l: number, f: LinField): number => mixSeed(s.dropoutSeed, l, LIN_ORDER.indexOf(f))

/** The adapter's input: x, or while training with lora dropout, x with this step's mask for (layer, module) applied. */
const adapterInput = (s: Step, x: Tensor, l: number, f: LinField): Tensor => (s.dropping ? dropout(s.rt, x, s.m.dropoutP, dropSeed(s, l, f)) : x)

/** y = x·Wᵀ (+ b) (+ the LoRA term) for layer l's projection f. */
function lin(s: Step, x: Tensor, l: number, f: LinField): Tensor {
  const { rt } = s
  const w = s.m.layers[l]!
  const y = matmul(rt, x, w[f], { transB: true })
  const b = w[BIAS_OF[f]]
  if (b !== undefined) {
    const bb = matmul(rt, s.ones, { buffer: b.buffer, shape: [1, b.shape[0]!], dtype: "f32" })
    addInPlace(rt, y, bb)
    rt.release(bb)
  }
  const adapter = adapterOf(s.m, l, f)
  if (adapter !== undefined) {
    const xa = adapterInput(s, x, l, f)
    addLoraForward(rt, y, xa, adapter)
    if (xa !== x) rt.release(xa)
  }
  return y
}

/**
 * Backward of y = lin(x, l, f) given dy: accumulates dW += dyᵀ·x, db += Σ_rows dy and the adapter's
 * dB += s·dyᵀ·(x·Aᵀ), dA += (s·dy·B)ᵀ·x where trainable; returns dx = dy·W (+ s·dy·B·A).
 */
function linBack(s: Step, dy: Tensor, x: Tensor, l: number, f: LinField): Tensor {
  const { rt } = s
  const w = s.m.layers[l]!
  const gw = s.gradOf(moduleOf(l, f) + ".weight")
  if (gw !== undefined) accumulate(rt, gw, matmul(rt, dy, x, { transA: true }))
  const b = w[BIAS_OF[f]]
  const gb = b === undefined ? undefined : s.gradOf(moduleOf(l, f) + ".bias")
  if (b !== undefined && gb !== undefined) {
    const db = matmul(rt, s.ones, dy, { transA: true })
    accumulate(rt, gb, { buffer: db.buffer, shape: b.shape, dtype: "f32" })
  }
  const dx = matmul(rt, dy, w[f])
  const adapter = adapterOf(s.m, l, f)
  if (adapter !== undefined) loraBack(s, adapter, dy, x, dx, l, f)
  return dx
}

/** The adapter's part of linBack: dB and dA accumulated, dx += s·dy·B·A. */
function loraBack(s: Step, adapter: LoraAdapter, dy: Tensor, x: Tensor, dx: Tensor, l: number, f: LinField): void {
  const { rt } = s
  // with dropout the adapter saw xa = mask ⊙ x/(1−p): its weights' gradients use xa, and dx takes the mask again
  const scaling = adapter.scaling
  const xa = adapterInput(s, x, l, f)
  const gB = s.gradOf(`${adapter.name}.lora_B.weight`)
  if (gB !== undefined) {
    const h = matmul(rt, xa, adapter.a, { transB: true })
    accumulate(rt, gB, matmul(rt, dy, h, { transA: true }), scaling)
    rt.release(h)
  }
  const dh = matmul(rt, dy, adapter.b)
  const gA = s.gradOf(`${adapter.name}.lora_A.weight`)
  if (gA !== undefined) accumulate(rt, gA, matmul(rt, dh, xa, { transA: true }), scaling)
  if (xa !== x) rt.release(xa)
  const dxa = matmul(rt, dh, adapter.a)
  const dxm = s.dropping ? dropout(rt, dxa, s.m.dropoutP, dropSeed(s, l, f)) : dxa
  axpyInPlace(rt, dx, dxm, scaling)
  rt.release(dh, dxa)
  if (dxm !== dxa) rt.release(dxm)
}

/** One layer's internals from its input x (up to the MLP's down projection). */
function layerForward(s: Step, l: number, x: Tensor): LayerActs {
  const { rt, m } = s
  const c = m.c
  const w = m.layers[l]!
  const eps = c.rmsNormEps
  const h1 = rmsnorm(rt, x, w.inputNorm, eps)
  const q = lin(s, h1, l, "q")
  const k = lin(s, h1, l, "k")
  const v = lin(s, h1, l, "v")
  applyRope(rt, q, s.posT, s.table, { heads: c.numHeads, headDim: c.headDim, layer: l })
  applyRope(rt, k, s.posT, s.table, { heads: c.numKvHeads, headDim: c.headDim, layer: l })
  const { o, lse } = attentionTrain(rt, q, k, v, s.attnOpts)
  const x1 = lin(s, o, l, "o")
  addInPlace(rt, x1, x)
  const h2 = rmsnorm(rt, x1, w.postNorm, eps)
  const g = lin(s, h2, l, "gate")
  const u = lin(s, h2, l, "up")
  const mlp = swiglu(rt, g, u)
  return { h1, q, k, v, o, lse, x1, h2, g, u, m: mlp }
}

const releaseActs = (rt: GpuRuntime, a: LayerActs): void => rt.release(a.h1, a.q, a.k, a.v, a.o, a.lse, a.x1, a.h2, a.g, a.u, a.m)

/** Every layer, keeping each layer's input and the last keepLayers layers' internals; returns the final-normed hidden states. */
function forward(s: Step): Tensor {
  const { rt, m } = s
  const L = m.layers.length
  s.saved.push(embed(rt, m.embedTable, s.ids))
  for (let l = 0; l < L; l++) {
    const a = layerForward(s, l, s.saved[l]!)
    const out = lin(s, a.m, l, "down")
    addInPlace(rt, out, a.x1)
    if (l >= L - s.keepLayers) s.kept[l] = a
    else releaseActs(rt, a)
    s.saved.push(out)
  }
  return keep(s, rmsnorm(rt, s.saved[L]!, m.finalNorm, m.c.rmsNormEps))
}

/**
 * The lm_head and the targets' log-probabilities, in row chunks (never the whole T×V logits); with row
 * weights also the loss's gradient with respect to the normed hidden states, and the head's.
 */
function headAndLoss(s: Step, normed: Tensor, targets: Uint32Array, rowWeights: Float32Array | undefined): { lpAll: Tensor; dNormed: Tensor | undefined } {
  const { rt, m, T } = s
  const [D, V] = [m.c.hiddenSize, m.c.vocabSize]
  const lpAll = keep(s, rt.tensor([T]))
  const dNormed = rowWeights === undefined ? undefined : keep(s, rt.tensor([T, D]))
  const gHead = s.gradOf(headName(m.c))
  const chunkRows = Math.max(1, Math.min(T, Math.floor(m.options.logitRows ?? LOGIT_FLOATS / V)))
  // Uploaded once (an upload flushes the batch); chunks copy their rows in batch order.
  const tgtAll = keep(s, rt.upload(targets))
  const rwAll = rowWeights === undefined ? undefined : keep(s, rt.upload(rowWeights))
  for (let r = 0; r < T; r += chunkRows) {
    const rows = Math.min(chunkRows, T - r)
    const whole = rows === T
    const tgt = whole ? tgtAll : sliceRows(rt, tgtAll, r, rows, 1, "u32")
    const rw = rwAll === undefined ? undefined : whole ? rwAll : sliceRows(rt, rwAll, r, rows, 1)
    const part = whole ? normed : sliceRows(rt, normed, r, rows, D)
    const logits = matmul(rt, part, m.head, { transB: true })
    const lp = logprobsFromLogits(rt, logits, tgt)
    rt.copy(lp.buffer, 0, lpAll.buffer, r * 4, rows * 4)
    rt.release(lp)
    if (dNormed !== undefined && rw !== undefined) {
      const dl = crossEntropyBackward(rt, logits, tgt, rw)
      const dPart = matmul(rt, dl, m.head)
      rt.copy(dPart.buffer, 0, dNormed.buffer, r * D * 4, rows * D * 4)
      if (gHead !== undefined) accumulate(rt, gHead, matmul(rt, dl, part, { transA: true }))
      rt.release(dl, dPart)
    }
    rt.release(logits)
    if (!whole) rt.release(part, tgt, rw)
  }
  return { lpAll, dNormed }
}

/** From ∂loss/∂normed back through the final norm and every layer (last first) to the embeddings, accumulating gradients. */
function backward(s: Step, dNormed: Tensor): void {
  const { rt, m } = s
  const fin = rmsnormBackward(rt, s.saved[m.layers.length]!, m.finalNorm, dNormed, m.c.rmsNormEps)
  accumulateOrRelease(s, "model.norm.weight", fin.dw)
  const dx = keep(s, fin.dx)
  rt.release(s.saved.pop())
  for (let l = m.layers.length - 1; l >= 0; l--) {
    const xin = s.saved[l]!
    const a = s.kept[l] ?? layerForward(s, l, xin)
    s.kept[l] = undefined
    layerBackward(s, l, a, xin, dx)
    rt.release(s.saved.pop())
  }
  const gEmbed = s.gradOf("model.embed_tokens.weight")
  if (gEmbed !== undefined) embeddingBackward(rt, gEmbed, s.ids, dx)
}

/**
 * Layer l's backward, from dx = ∂loss/∂(its output) to ∂loss/∂(its input x), in place in dx. Each of
 * the internals `a` is released after its last use, so the pool can hand its buffer to the next temporary.
 */
function layerBackward(s: Step, l: number, a: LayerActs, x: Tensor, dx: Tensor): void {
  const { rt, m } = s
  const c = m.c
  const w = m.layers[l]!
  const p = layerPrefix(l)
  const eps = c.rmsNormEps
  // MLP: out = x1 + down(swiglu(gate(h2), up(h2)))
  const dm = linBack(s, dx, a.m, l, "down")
  rt.release(a.m)
  const { dgate, dup } = swigluBackward(rt, a.g, a.u, dm)
  rt.release(dm, a.g, a.u)
  const dh2 = linBack(s, dgate, a.h2, l, "gate")
  const dh2u = linBack(s, dup, a.h2, l, "up")
  addInPlace(rt, dh2, dh2u)
  rt.release(dgate, dup, dh2u, a.h2)
  const post = rmsnormBackward(rt, a.x1, w.postNorm, dh2, eps)
  rt.release(dh2, a.x1)
  accumulateOrRelease(s, p + LAYER_NAMES.postNorm, post.dw)
  addInPlace(rt, dx, post.dx) // dx is now ∂loss/∂x1
  rt.release(post.dx)

  // Attention: x1 = x + o_proj(attn(rope(q(h1)), rope(k(h1)), v(h1)))
  const dO = linBack(s, dx, a.o, l, "o")
  const { dq, dk, dv } = attentionBackward(rt, a.q, a.k, a.v, a.o, a.lse, dO, s.attnOpts)
  rt.release(dO, a.q, a.k, a.v, a.o, a.lse)
  applyRopeBackward(rt, dq, s.posT, s.table, { heads: c.numHeads, headDim: c.headDim, layer: l }, s.inv)
  applyRopeBackward(rt, dk, s.posT, s.table, { heads: c.numKvHeads, headDim: c.headDim, layer: l }, s.inv)
  const dh1 = linBack(s, dq, a.h1, l, "q")
  const dh1k = linBack(s, dk, a.h1, l, "k")
  const dh1v = linBack(s, dv, a.h1, l, "v")
  addInPlace(rt, dh1, dh1k)
  addInPlace(rt, dh1, dh1v)
  rt.release(dq, dk, dv, dh1k, dh1v, a.h1)
  const pre = rmsnormBackward(rt, x, w.inputNorm, dh1, eps)
  rt.release(dh1)
  accumulateOrRelease(s, p + LAYER_NAMES.inputNorm, pre.dw)
  addInPlace(rt, dx, pre.dx) // ∂loss/∂x, the previous layer's output
  rt.release(pre.dx)
}

/** grad += s·delta (delta, a fresh temporary, is released; a [1, N] bias sum lands on its [N] gradient). */
function accumulate(rt: GpuRuntime, g: Tensor, delta: Tensor, s = 1): void {
  if (numel(g.shape) !== numel(delta.shape)) throw new Error(`trainable llama: gradient ${shapeString(delta.shape)} does not fit ${shapeString(g.shape)}`)
  axpyInPlace(rt, g, { buffer: delta.buffer, shape: g.shape, dtype: "f32" }, s)
  rt.release(delta)
}

/** A norm weight's gradient added to its sink, or released where the weight is frozen. */
function accumulateOrRelease(s: Step, name: string, dw: Tensor): void {
  const g = s.gradOf(name)
  if (g !== undefined) accumulate(s.rt, g, dw)
  else s.rt.release(dw)
}

/** The trainable parameters as they are now (LoRA: the adapters and any norms / embeddings trained), F32. */
async function trainedTensors(rt: GpuRuntime, params: readonly ParamInit[]): Promise<TensorToWrite[]> {
  const out: TensorToWrite[] = []
  for (const p of params) out.push({ name: p.name, dtype: "F32", shape: p.value.shape, data: await rt.read(p.value) })
  return out
}

/** The weights in the checkpoint's own layout (Phi-3's projections fused again, LoRA merged in), F32. */
async function hfTensors(m: TrainModel, base: BaseWeights): Promise<TensorToWrite[]> {
  const { rt, c } = m
  const out: TensorToWrite[] = []
  /** A base weight with its adapter (if any) merged in, W + s·B·A rounded once to f32. */
  const f32 = async (name: string): Promise<Float32Array> => {
    const w = await rt.read(base.byName.get(name)!)
    const adapter = m.adapters.get(name.slice(0, -".weight".length))
    if (adapter === undefined) return w
    const a = await rt.read(adapter.a)
    const b = await rt.read(adapter.b)
    return mergeLoraHost(w, a, b, adapter.outFeatures, adapter.inFeatures, adapter.rank, adapter.scaling)
  }
  const emit = (name: string, shape: readonly number[], data: Float32Array): void => {
    out.push({ name, dtype: "F32", shape, data })
  }
  const [D, I, qDim, kvDim] = [c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim]
  for (const p of base.params) {
    const name = p.name
    if (c.fused && /\.self_attn\.[kv]_proj\.weight$|\.mlp\.up_proj\.weight$/.test(name)) continue
    if (c.fused && name.endsWith(".self_attn.q_proj.weight")) {
      const pre = name.slice(0, -"q_proj.weight".length)
      const parts = [await f32(name), await f32(`${pre}k_proj.weight`), await f32(`${pre}v_proj.weight`)]
      emit(`${pre}qkv_proj.weight`, [qDim + 2 * kvDim, D], concat(parts))
    } else if (c.fused && name.endsWith(".mlp.gate_proj.weight")) {
      const pre = name.slice(0, -"gate_proj.weight".length)
      emit(`${pre}gate_up_proj.weight`, [2 * I, D], concat([await f32(name), await f32(`${pre}up_proj.weight`)]))
    } else emit(name, p.value.shape, await f32(name))
  }
  return out
}

const isTensorSource = (s: TensorSource | HostWeights): s is TensorSource => s instanceof Checkpoint || "source" in s

function splitTokens(batch: TrainBatch): { inputs: Uint32Array; targets: Uint32Array } {
  if (batch.tokens !== undefined) {
    if (batch.inputs !== undefined || batch.targets !== undefined) throw new Error("lossAndGrad: give tokens, or inputs and targets, not both")
    const all = hostU32("tokens", batch.tokens, batch.tokens.length)
    if (all.length < 1) throw new Error("lossAndGrad: tokens must hold at least one id")
    return { inputs: all.subarray(0, all.length - 1), targets: all.subarray(1) }
  }
  if (batch.inputs === undefined || batch.targets === undefined) throw new Error("lossAndGrad: give tokens (T+1 ids) or inputs and targets (T each)")
  const inputs = hostU32("inputs", batch.inputs, batch.inputs.length)
  const targets = hostU32("targets", batch.targets, inputs.length)
  return { inputs, targets }
}

/** Checks length and range (non-negative 32-bit integers) and copies to a Uint32Array. */
function hostU32(what: string, values: ArrayLike<number>, n: number): Uint32Array {
  if (values.length !== n) throw new Error(`lossAndGrad: ${what} has ${values.length} values, expected ${n}`)
  const out = new Uint32Array(n)
  for (let i = 0; i < n; i++) {
    const v = values[i]!
    if (!Number.isInteger(v) || v < 0 || v >= 2 ** 32) throw new Error(`lossAndGrad: ${what}[${i}] = ${v} is not a non-negative 32-bit integer`)
    out[i] = v
  }
  return out
}

/** Rows [from, from+rows) of x [*, width] as a new tensor (a recorded copy, in batch order). */
function sliceRows(rt: GpuRuntime, x: Tensor, from: number, rows: number, width: number, dtype: "f32" | "u32" = "f32"): Tensor {
  const t = rt.tensor(width === 1 ? [rows] : [rows, width], dtype)
  rt.copy(x.buffer, from * width * 4, t.buffer, 0, rows * width * 4)
  return t
}

function concat(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
