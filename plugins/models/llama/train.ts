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
import { attentionBackward, attentionTrain } from "../../../kernels/attention-backward.ts"
import { crossEntropyBackward } from "../../../kernels/cross-entropy-backward.ts"
import { embed } from "../../../kernels/embedding.ts"
import { embeddingBackward } from "../../../kernels/embedding-backward.ts"
import { logprobsFromLogits } from "../../../kernels/logprobs.ts"
import { matmul } from "../../../kernels/matmul.ts"
import { rmsnorm } from "../../../kernels/rmsnorm.ts"
import { rmsnormBackward } from "../../../kernels/rmsnorm-backward.ts"
import { applyRope, releaseRopeTable, uploadRopeTable } from "../../../kernels/rope.ts"
import { applyRopeBackward, inverseRopeTable } from "../../../kernels/rope-backward.ts"
import type { RopeTable } from "../../../kernels/rope-table.ts"
import type { GpuRuntime } from "../../../kernels/runtime.ts"
import { axpyInPlace, fill } from "../../../kernels/scale.ts"
import { settleTuning } from "../../../kernels/tuning.ts"
import { swiglu } from "../../../kernels/swiglu.ts"
import { swigluBackward } from "../../../kernels/swiglu-backward.ts"
import { type Tensor, numel, shapeString } from "../../../kernels/tensor.ts"
import { inputError } from "../../../common/errors.ts"
import { type LoraAdapter, type LoraConfig, addLoraForward, createLora, loraParams, mergeLoraHost, releaseLora } from "../../../training/lora.ts"
import type { GradOptions, HostWeights, LossResult, TrainableModel, TrainBatch } from "../../../training/model.ts"
import type { ParamInit } from "../../../training/optimizer.ts"
import { Checkpoint, type TensorToWrite } from "../../../common/safetensors.ts"
import type { LlamaConfig } from "./config.ts"
import { checkTokens } from "./model.ts"
import { type HostLayer, layerPrefix, readLayer, validateCheckpoint } from "./weights.ts"

/** Logit rows per lm_head chunk are capped so rows × vocab stays under this many floats (16 MiB). */
const LOGIT_FLOATS = 4 * 1024 * 1024
/** Default budget for layers' internals kept from the forward instead of recomputed in the backward. */
const KEEP_ACTIVATION_BYTES = 512 * 1024 * 1024

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
const BIAS_OF: Readonly<Record<LinField, keyof LayerParams>> = {
  q: "qBias", k: "kBias", v: "vBias", o: "oBias", gate: "gateBias", up: "upBias", down: "downBias",
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
   * only, as LongLoRA: an untied lm_head stays frozen).
   */
  readonly lora?: {
    readonly config: LoraConfig
    readonly targets: readonly LoraTarget[]
    readonly trainNorms?: boolean
    readonly trainEmbeddings?: boolean
  }
}

/**
 * Loads weights (a model folder, an opened checkpoint, or host tensors by HF name) as f32 tensors. Every
 * weight is a trainable parameter, or with `lora` the adapters (and optionally norms and embeddings).
 */
export function createTrainableLlama(rt: GpuRuntime, config: LlamaConfig, source: string | Checkpoint | HostWeights, options: TrainableOptions = {}): TrainableLlama {
  const c = config
  const D = c.hiddenSize
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  const I = c.intermediateSize
  const V = c.vocabSize
  const L = c.numLayers
  const lora = options.lora

  const owned: Tensor[] = []
  const adapters = new Map<string, LoraAdapter>()
  /** Every tensor by name: base weights, and the adapters' A and B. */
  const byName = new Map<string, Tensor>()
  const base: ParamInit[] = []
  const put = (name: string, data: Float32Array, shape: readonly number[], weightDecay: boolean): Tensor => {
    const n = shape.reduce((a, b) => a * b, 1)
    if (data.length !== n) throw inputError(name, `has ${data.length} values, expected [${shape.join(", ")}]`)
    const t = rt.upload(data, shape)
    owned.push(t)
    base.push({ name, value: t, weightDecay })
    byName.set(name, t)
    return t
  }

  let read: (name: string) => Float32Array
  let layerOf: (i: number) => HostLayer
  if (typeof source === "string" || source instanceof Checkpoint) {
    const ckpt = typeof source === "string" ? Checkpoint.open(source) : source
    validateCheckpoint(c, ckpt)
    read = (name) => ckpt.read(name)
    layerOf = (i) => readLayer(c, ckpt, i)
  } else {
    read = (name) => {
      const t = source.get(name)
      if (t === undefined) throw inputError("host weights", `missing tensor "${name}"`)
      return t
    }
    const opt = (name: string, present: boolean): Float32Array | undefined => (present ? read(name) : undefined)
    layerOf = (i) => {
      const p = layerPrefix(i)
      return {
        inputNorm: read(`${p}input_layernorm.weight`),
        q: read(`${p}self_attn.q_proj.weight`),
        k: read(`${p}self_attn.k_proj.weight`),
        v: read(`${p}self_attn.v_proj.weight`),
        o: read(`${p}self_attn.o_proj.weight`),
        qBias: opt(`${p}self_attn.q_proj.bias`, c.qkvBias),
        kBias: opt(`${p}self_attn.k_proj.bias`, c.qkvBias),
        vBias: opt(`${p}self_attn.v_proj.bias`, c.qkvBias),
        oBias: opt(`${p}self_attn.o_proj.bias`, c.oBias),
        postNorm: read(`${p}post_attention_layernorm.weight`),
        gate: read(`${p}mlp.gate_proj.weight`),
        up: read(`${p}mlp.up_proj.weight`),
        down: read(`${p}mlp.down_proj.weight`),
        gateBias: opt(`${p}mlp.gate_proj.bias`, c.mlpBias),
        upBias: opt(`${p}mlp.up_proj.bias`, c.mlpBias),
        downBias: opt(`${p}mlp.down_proj.bias`, c.mlpBias),
      }
    }
  }

  let embedTable: Tensor, finalNorm: Tensor, head: Tensor
  const layers: LayerParams[] = []
  try {
    embedTable = put("model.embed_tokens.weight", read("model.embed_tokens.weight"), [V, D], true)
    for (let i = 0; i < L; i++) {
      const h = layerOf(i)
      const p = layerPrefix(i)
      const b = (field: keyof LayerParams, data: Float32Array | undefined, n: number): Tensor | undefined =>
        data === undefined ? undefined : put(p + LAYER_NAMES[field], data, [n], false)
      layers.push({
        inputNorm: put(p + LAYER_NAMES.inputNorm, h.inputNorm, [D], false),
        q: put(p + LAYER_NAMES.q, h.q, [qDim, D], true),
        k: put(p + LAYER_NAMES.k, h.k, [kvDim, D], true),
        v: put(p + LAYER_NAMES.v, h.v, [kvDim, D], true),
        o: put(p + LAYER_NAMES.o, h.o, [D, qDim], true),
        qBias: b("qBias", h.qBias, qDim),
        kBias: b("kBias", h.kBias, kvDim),
        vBias: b("vBias", h.vBias, kvDim),
        oBias: b("oBias", h.oBias, D),
        postNorm: put(p + LAYER_NAMES.postNorm, h.postNorm, [D], false),
        gate: put(p + LAYER_NAMES.gate, h.gate, [I, D], true),
        up: put(p + LAYER_NAMES.up, h.up, [I, D], true),
        down: put(p + LAYER_NAMES.down, h.down, [D, I], true),
        gateBias: b("gateBias", h.gateBias, I),
        upBias: b("upBias", h.upBias, I),
        downBias: b("downBias", h.downBias, D),
      })
    }
    finalNorm = put("model.norm.weight", read("model.norm.weight"), [D], false)
    head = c.tieWordEmbeddings ? embedTable : put("lm_head.weight", read("lm_head.weight"), [V, D], true)
  } catch (e) {
    rt.release(...owned)
    throw e
  }
  const headName = c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight"

  let params: ParamInit[]
  if (lora === undefined) params = base
  else {
    params = []
    const isNorm = (n: string): boolean => n.endsWith("layernorm.weight") || n === "model.norm.weight"
    for (const p of base) {
      if ((lora.trainNorms === true && isNorm(p.name)) || (lora.trainEmbeddings === true && p.name === "model.embed_tokens.weight")) params.push(p)
    }
    try {
      for (let i = 0; i < L; i++) {
        for (const target of new Set(lora.targets)) {
          const f = LIN_FIELDS[target]
          if (f === undefined) throw new Error(`lora: unknown target "${String(target)}"; known: ${Object.keys(LIN_FIELDS).join(", ")}`)
          const module = layerPrefix(i) + LAYER_NAMES[f].slice(0, -".weight".length)
          const [outF, inF] = layers[i]![f].shape as [number, number]
          const a = createLora(rt, module, inF, outF, lora.config)
          adapters.set(module, a)
          for (const q of loraParams(a)) {
            params.push(q)
            byName.set(q.name, q.value)
          }
        }
      }
    } catch (e) {
      rt.release(...owned)
      for (const a of adapters.values()) releaseLora(rt, a)
      throw e
    }
  }
  const trainable = new Set(params.map((p) => p.name))
  const moduleOf = (l: number, f: LinField): string => layerPrefix(l) + LAYER_NAMES[f].slice(0, -".weight".length)
  const adapterOf = (l: number, f: LinField): LoraAdapter | undefined => (adapters.size === 0 ? undefined : adapters.get(moduleOf(l, f)))

  let disposed = false
  const eps = c.rmsNormEps

  async function lossAndGrad(batch: TrainBatch, grad?: GradOptions): Promise<LossResult> {
    if (disposed) throw new Error("trainable llama: used after dispose()")
    const { inputs, targets } = splitTokens(batch)
    const T = inputs.length
    checkTokens(inputs, V, "inputs")
    checkTokens(targets, V, "targets")
    if (T === 0) return { loss: 0, tokens: 0 }
    if (c.slidingWindow !== undefined && T > c.slidingWindow) {
      throw inputError(c.file, `sliding_window ${c.slidingWindow} is shorter than the ${T}-token sequence; sliding-window attention is not implemented`)
    }
    const positions = hostU32("positions", batch.positions ?? Uint32Array.from({ length: T }, (_, i) => i), T)
    const segments = batch.segments === undefined ? undefined : hostU32("segments", batch.segments, T)
    const mask = batch.labelMask
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
    const scale = grad?.scale ?? 1
    // The loss's weighted mean, the mask and the accumulation scale all become per-row weights of the CE backward.
    const rowWeights = new Float32Array(T)
    for (let t = 0; t < T; t++) rowWeights[t] = weightSum > 0 ? (scale * w(t)) / weightSum : 0
    /** The gradient sink of a trainable tensor; undefined for frozen ones (or forward only). */
    const gradOf = (name: string): Tensor | undefined => (grad !== undefined && trainable.has(name) ? grad.grads(name) : undefined)

    const temps: Tensor[] = []
    const keep = <X extends Tensor>(t: X): X => {
      temps.push(t)
      return t
    }
    const ids = keep(rt.upload(inputs))
    const posT = keep(rt.upload(positions))
    const segT = segments === undefined ? undefined : keep(rt.upload(segments))
    const table = uploadRopeTable(rt, batch.rope, L)
    const inv = grad === undefined ? undefined : inverseRopeTable(rt, table)
    // Bias broadcasts and column sums are rank-1 matmuls against this column of ones.
    const ones = keep(rt.tensor([T, 1]))
    fill(rt, ones, 1)
    const saved: Tensor[] = []
    /** Layers' internals kept from the forward for the backward (the last `keepLayers` layers). */
    const kept: (LayerActs | undefined)[] = []
    const actBytes = 4 * T * (3 * D + 2 * qDim + 2 * kvDim + 3 * I + c.numHeads)
    const keepLayers = grad === undefined ? 0 : Math.max(1, Math.min(L, Math.floor((options.keepActivationBytes ?? KEEP_ACTIVATION_BYTES) / actBytes)))
    const attnOpts = segT === undefined
      ? { heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim }
      : { heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, segments: segT }

    /** y = x·Wᵀ (+ b) (+ the LoRA term) for layer l's projection f. */
    const lin = (x: Tensor, l: number, f: LinField): Tensor => {
      const w = layers[l]!
      const y = matmul(rt, x, w[f], { transB: true })
      const b = w[BIAS_OF[f]]
      if (b !== undefined) {
        const bb = matmul(rt, ones, { buffer: b.buffer, shape: [1, b.shape[0]!], dtype: "f32" })
        addInPlace(rt, y, bb)
        rt.release(bb)
      }
      const adapter = adapterOf(l, f)
      if (adapter !== undefined) addLoraForward(rt, y, x, adapter)
      return y
    }

    /**
     * Backward of y = lin(x, l, f) given dy: accumulates dW += dyᵀ·x, db += Σ_rows dy and the adapter's
     * dB += s·dyᵀ·(x·Aᵀ), dA += (s·dy·B)ᵀ·x where trainable; returns dx = dy·W (+ s·dy·B·A).
     */
    const linBack = (dy: Tensor, x: Tensor, l: number, f: LinField): Tensor => {
      const w = layers[l]!
      const gw = gradOf(moduleOf(l, f) + ".weight")
      if (gw !== undefined) accumulate(gw, matmul(rt, dy, x, { transA: true }))
      const b = w[BIAS_OF[f]]
      const gb = b === undefined ? undefined : gradOf(moduleOf(l, f) + ".bias")
      if (b !== undefined && gb !== undefined) {
        const db = matmul(rt, ones, dy, { transA: true })
        accumulate(gb, { buffer: db.buffer, shape: b.shape, dtype: "f32" })
      }
      const dx = matmul(rt, dy, w[f])
      const adapter = adapterOf(l, f)
      if (adapter !== undefined) {
        const s = adapter.scaling
        const gB = gradOf(`${adapter.name}.lora_B.weight`)
        if (gB !== undefined) {
          const h = matmul(rt, x, adapter.a, { transB: true })
          accumulate(gB, matmul(rt, dy, h, { transA: true }), s)
          rt.release(h)
        }
        const dh = matmul(rt, dy, adapter.b)
        const gA = gradOf(`${adapter.name}.lora_A.weight`)
        if (gA !== undefined) accumulate(gA, matmul(rt, dh, x, { transA: true }), s)
        const dxa = matmul(rt, dh, adapter.a)
        axpyInPlace(rt, dx, dxa, s)
        rt.release(dh, dxa)
      }
      return dx
    }

    /** One layer's internals from its input x. */
    const recompute = (l: number, x: Tensor): LayerActs => {
      const w = layers[l]!
      const h1 = rmsnorm(rt, x, w.inputNorm, eps)
      const q = lin(h1, l, "q")
      const k = lin(h1, l, "k")
      const v = lin(h1, l, "v")
      applyRope(rt, q, posT, table, { heads: c.numHeads, headDim: c.headDim, layer: l })
      applyRope(rt, k, posT, table, { heads: c.numKvHeads, headDim: c.headDim, layer: l })
      const { o, lse } = attentionTrain(rt, q, k, v, attnOpts)
      const x1 = lin(o, l, "o")
      addInPlace(rt, x1, x)
      const h2 = rmsnorm(rt, x1, w.postNorm, eps)
      const g = lin(h2, l, "gate")
      const u = lin(h2, l, "up")
      const m = swiglu(rt, g, u)
      return { h1, q, k, v, o, lse, x1, h2, g, u, m }
    }
    const releaseActs = (a: LayerActs): void => rt.release(a.h1, a.q, a.k, a.v, a.o, a.lse, a.x1, a.h2, a.g, a.u, a.m)

    try {
      // ---- forward: keep each layer's input, and the last keepLayers layers' internals for the backward ----
      saved.push(embed(rt, embedTable, ids))
      for (let l = 0; l < L; l++) {
        const a = recompute(l, saved[l]!)
        const out = lin(a.m, l, "down")
        addInPlace(rt, out, a.x1)
        if (l >= L - keepLayers) kept[l] = a
        else releaseActs(a)
        saved.push(out)
      }
      const xL = saved[L]!
      const normed = keep(rmsnorm(rt, xL, finalNorm, eps))

      // ---- head and loss, in row chunks ----
      const lpAll = keep(rt.tensor([T]))
      const dNormed = grad === undefined ? undefined : keep(rt.tensor([T, D]))
      const gHead = gradOf(headName)
      const chunkRows = Math.max(1, Math.min(T, Math.floor(options.logitRows ?? LOGIT_FLOATS / V)))
      // Uploaded once (an upload flushes the batch); chunks copy their rows in batch order.
      const tgtAll = keep(rt.upload(targets))
      const rwAll = grad === undefined ? undefined : keep(rt.upload(rowWeights))
      for (let r = 0; r < T; r += chunkRows) {
        const rows = Math.min(chunkRows, T - r)
        const whole = rows === T
        const tgt = whole ? tgtAll : sliceRows(rt, tgtAll, r, rows, 1, "u32")
        const rw = rwAll === undefined ? undefined : whole ? rwAll : sliceRows(rt, rwAll, r, rows, 1)
        const part = whole ? normed : sliceRows(rt, normed, r, rows, D)
        const logits = matmul(rt, part, head, { transB: true })
        const lp = logprobsFromLogits(rt, logits, tgt)
        rt.copy(lp.buffer, 0, lpAll.buffer, r * 4, rows * 4)
        rt.release(lp)
        if (dNormed !== undefined && rw !== undefined) {
          const dl = crossEntropyBackward(rt, logits, tgt, rw)
          const dPart = matmul(rt, dl, head)
          rt.copy(dPart.buffer, 0, dNormed.buffer, r * D * 4, rows * D * 4)
          if (gHead !== undefined) accumulate(gHead, matmul(rt, dl, part, { transA: true }))
          rt.release(dl, dPart)
        }
        rt.release(logits)
        if (!whole) rt.release(part, tgt, rw)
      }

      if (dNormed !== undefined && inv !== undefined) {
        // ---- backward ----
        const fin = rmsnormBackward(rt, xL, finalNorm, dNormed, eps)
        const gFinal = gradOf("model.norm.weight")
        if (gFinal !== undefined) accumulate(gFinal, fin.dw)
        else rt.release(fin.dw)
        const dx = keep(fin.dx)
        rt.release(saved.pop())
        for (let l = L - 1; l >= 0; l--) {
          const w = layers[l]!
          const p = layerPrefix(l)
          const xin = saved[l]!
          const a = kept[l] ?? recompute(l, xin)
          kept[l] = undefined

          // MLP: out = x1 + down(swiglu(gate(h2), up(h2)))
          // Each activation is released after its last use, so the pool can hand its buffer to the next temporary.
          const dm = linBack(dx, a.m, l, "down")
          rt.release(a.m)
          const { dgate, dup } = swigluBackward(rt, a.g, a.u, dm)
          rt.release(dm, a.g, a.u)
          const dh2 = linBack(dgate, a.h2, l, "gate")
          const dh2u = linBack(dup, a.h2, l, "up")
          addInPlace(rt, dh2, dh2u)
          rt.release(dgate, dup, dh2u, a.h2)
          const post = rmsnormBackward(rt, a.x1, w.postNorm, dh2, eps)
          rt.release(dh2, a.x1)
          const gPost = gradOf(p + LAYER_NAMES.postNorm)
          if (gPost !== undefined) accumulate(gPost, post.dw)
          else rt.release(post.dw)
          addInPlace(rt, dx, post.dx) // dx is now ∂loss/∂x1
          rt.release(post.dx)

          // Attention: x1 = x + o_proj(attn(rope(q(h1)), rope(k(h1)), v(h1)))
          const dO = linBack(dx, a.o, l, "o")
          const { dq, dk, dv } = attentionBackward(rt, a.q, a.k, a.v, a.o, a.lse, dO, attnOpts)
          rt.release(dO, a.q, a.k, a.v, a.o, a.lse)
          applyRopeBackward(rt, dq, posT, table, { heads: c.numHeads, headDim: c.headDim, layer: l }, inv)
          applyRopeBackward(rt, dk, posT, table, { heads: c.numKvHeads, headDim: c.headDim, layer: l }, inv)
          const dh1 = linBack(dq, a.h1, l, "q")
          const dh1k = linBack(dk, a.h1, l, "k")
          const dh1v = linBack(dv, a.h1, l, "v")
          addInPlace(rt, dh1, dh1k)
          addInPlace(rt, dh1, dh1v)
          rt.release(dq, dk, dv, dh1k, dh1v, a.h1)
          const pre = rmsnormBackward(rt, xin, w.inputNorm, dh1, eps)
          rt.release(dh1)
          const gIn = gradOf(p + LAYER_NAMES.inputNorm)
          if (gIn !== undefined) accumulate(gIn, pre.dw)
          else rt.release(pre.dw)
          addInPlace(rt, dx, pre.dx) // ∂loss/∂x, the previous layer's output
          rt.release(pre.dx)
          rt.release(saved.pop())
        }
        const gEmbed = gradOf("model.embed_tokens.weight")
        if (gEmbed !== undefined) embeddingBackward(rt, gEmbed, ids, dx)
      }

      const lp = await rt.read(lpAll)
      let sum = 0
      for (let t = 0; t < T; t++) sum += w(t) * lp[t]!
      await settleTuning(rt) // shapes seen for the first time on this machine: time their variants now
      return { loss: weightSum > 0 ? -sum / weightSum : 0, tokens: scored }
    } finally {
      for (const a of kept) if (a !== undefined) releaseActs(a)
      rt.release(...saved.splice(0), ...temps)
      releaseRopeTable(rt, table)
      if (inv !== undefined) rt.releaseBuffer(inv.buffer)
    }
  }

  /** grad += s·delta (delta, a fresh temporary, is released; a [1, N] bias sum lands on its [N] gradient). */
  function accumulate(g: Tensor, delta: Tensor, s = 1): void {
    if (numel(g.shape) !== numel(delta.shape)) throw new Error(`trainable llama: gradient ${shapeString(delta.shape)} does not fit ${shapeString(g.shape)}`)
    axpyInPlace(rt, g, { buffer: delta.buffer, shape: g.shape, dtype: "f32" }, s)
    rt.release(delta)
  }

  async function hfTensors(): Promise<TensorToWrite[]> {
    const out: TensorToWrite[] = []
    /** A base weight with its adapter (if any) merged in, W + s·B·A rounded once to f32. */
    const f32 = async (name: string): Promise<Float32Array> => {
      const w = await rt.read(byName.get(name)!)
      const adapter = adapters.get(name.slice(0, -".weight".length))
      if (adapter === undefined) return w
      const a = await rt.read(adapter.a)
      const b = await rt.read(adapter.b)
      return mergeLoraHost(w, a, b, adapter.outFeatures, adapter.inFeatures, adapter.rank, adapter.scaling)
    }
    const emit = (name: string, shape: readonly number[], data: Float32Array): void => {
      out.push({ name, dtype: "F32", shape, data })
    }
    for (const p of base) {
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

  return {
    config: c,
    params,
    param(name) {
      const t = byName.get(name)
      if (t === undefined) throw new Error(`trainable llama: no tensor "${name}"`)
      return t
    },
    lossAndGrad,
    hfTensors,
    dispose() {
      if (disposed) return
      disposed = true
      rt.flush()
      rt.release(...owned)
      for (const a of adapters.values()) releaseLora(rt, a)
    },
  }
}

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
