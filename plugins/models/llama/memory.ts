/**
 * The llama family's memory plan: what loading and running a folder will allocate, computed from config.json
 * and the tensor headers before anything is read, mirroring what model.ts (scoring) and train.ts (training)
 * allocate. test/models/memory-plan.test.ts holds the plan against the bytes measured on the device.
 */
import type { MemoryOptions, MemoryPlan, PlanPart, PlannedModel, TrainPlan } from "../family.ts"
import type { LlamaConfig } from "./config.ts"
import { DEFAULT_CHUNK, type InspectedLlama, LOGIT_FLOATS } from "./model.ts"
import { layerPrefix } from "./weights.ts"
import { defaultPageRows } from "../../../kernels/attention.ts"
import { KEEP_ACTIVATION_BYTES, LOGIT_FLOATS as TRAIN_LOGIT_FLOATS } from "./train.ts"

const F32 = 4

/** Per-layer shapes. */
function shapes(c: LlamaConfig) {
  const D = c.hiddenSize
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  const I = c.intermediateSize
  /** The linear layers of one layer, [out, in], by HF module name. */
  const linears: Readonly<Record<string, readonly [number, number]>> = {
    q_proj: [qDim, D], k_proj: [kvDim, D], v_proj: [kvDim, D], o_proj: [D, qDim], gate_proj: [I, D], up_proj: [I, D], down_proj: [D, I],
  }
  const biases = (c.qkvBias ? qDim + 2 * kvDim : 0) + (c.oBias ? D : 0) + (c.mlpBias ? 2 * I + D : 0)
  return { D, qDim, kvDim, I, V: c.vocabSize, L: c.numLayers, linears, biases }
}

/** Elements of a prepared weight W [n, k]: stored transposed, K padded to 4, N to a 16-column block. */
const preparedElements = (n: number, k: number): number => Math.ceil(k / 4) * 4 * Math.ceil(n / 16) * 16


/** The plan at `length` tokens: scoring (chunks of `chunk`, a KV cache) or, with `train`, one training step of `length` tokens. */
export function llamaMemory(model: PlannedModel, length: number, options: MemoryOptions = {}): MemoryPlan {
  const c = model.config as LlamaConfig
  return options.train === undefined ? scoringPlan(c, fileBytes(model), length, options) : trainingPlan(c, length, options.train)
}

/** Bytes per value of a tensor in the folder (its file dtype: 16-bit weights stay 16-bit); 4 without a folder. */
function fileBytes(model: PlannedModel): (name: string) => number {
  const ckpt = "checkpoint" in model ? (model as InspectedLlama).checkpoint : undefined
  return (name) => (ckpt?.get(name)?.dtype === "F16" || ckpt?.get(name)?.dtype === "BF16" ? 2 : F32)
}

/** HF names of a layer's linears, by the module names `shapes` uses (Phi-3's fused ones split alike). */
const MODULE_TENSORS: Readonly<Record<string, string>> = {
  q_proj: "self_attn.q_proj.weight", k_proj: "self_attn.k_proj.weight", v_proj: "self_attn.v_proj.weight", o_proj: "self_attn.o_proj.weight",
  gate_proj: "mlp.gate_proj.weight", up_proj: "mlp.up_proj.weight", down_proj: "mlp.down_proj.weight",
}
const FUSED: Readonly<Record<string, string>> = { q_proj: "self_attn.qkv_proj.weight", k_proj: "self_attn.qkv_proj.weight", v_proj: "self_attn.qkv_proj.weight", gate_proj: "mlp.gate_up_proj.weight", up_proj: "mlp.gate_up_proj.weight" }

/** Scoring (model.ts): weights in their file dtype, a paged K and V cache per layer, one chunk's working buffers. */
function scoringPlan(c: LlamaConfig, bytes: (name: string) => number, length: number, o: MemoryOptions): MemoryPlan {
  const { D, qDim, kvDim, I, V, L, linears, biases } = shapes(c)
  const embedBytes = bytes("model.embed_tokens.weight")
  const headBytes = c.tieWordEmbeddings ? embedBytes : bytes("lm_head.weight")
  let layerWeights = 0
  for (let l = 0; l < L; l++) {
    for (const [m, [n, k]] of Object.entries(linears)) {
      const name = layerPrefix(l) + (c.fused ? FUSED[m] ?? MODULE_TENSORS[m]! : MODULE_TENSORS[m]!)
      layerWeights += preparedElements(n, k) * bytes(name)
    }
  }
  // the embedding table is a storage buffer in the file's dtype and the head a prepared weight; a tied
  // head is the only copy (the lookup reads its rows); norms and biases f32
  const table = c.tieWordEmbeddings ? 0 : V * D * embedBytes
  const weights = table + preparedElements(V, D) * headBytes + layerWeights + F32 * (D + L * (2 * D + biases))
  // The cache keeps the weights' precision unless asked; its rows come in pages (each one allocated
  // whole); a 16-bit page is widened into an f32 scratch page of K and of V while attended.
  const kvBytes = o.kvCache === undefined ? (embedBytes === 2 ? 2 : F32) : o.kvCache === "f32" ? F32 : 2
  const pageRows = defaultPageRows(length, c.numKvHeads, c.headDim)
  const pages = Math.ceil(length / pageRows)
  const kvCache = 2 * L * pages * pageRows * kvDim * kvBytes + (kvBytes === 2 ? 2 * pageRows * kvDim * F32 : 0)
  const chunk = Math.max(1, Math.min(length, o.chunk ?? DEFAULT_CHUNK))
  const rows = Math.max(1, Math.min(chunk, Math.floor(LOGIT_FLOATS / V)))
  // One chunk's buffers: residual, norm, q, k, v, attention output, gate, up, swiglu, the two residual
  // updates' scratch outputs; x copied into a texture for the matmul; a block of logits (and its padded
  // scratch when the vocabulary is not a multiple of 16). The pool keeps what a chunk released for the next,
  // and a last, shorter chunk allocates a second set of sizes.
  const xTexture = (Math.ceil(chunk / 64) * 64 + 1) * (Math.ceil(Math.max(D, I, qDim) / 64) * 64 + 4)
  const logits = rows * V + (V % 16 === 0 ? 0 : rows * Math.ceil(V / 16) * 16)
  const sets = length - 1 > chunk ? 2 : 1 // (not 1 again at exact multiples: the plan must grow with length)
  const activations = sets * F32 * (chunk * (5 * D + 2 * qDim + 2 * kvDim + 3 * I) + xTexture + logits)
  // loading reads one layer at a time (in the file's dtype) and transposes one matrix beside it; the
  // embedding is read whole and the head transposed from it
  const wBytes = Math.max(embedBytes, bytes(`${layerPrefix(0)}mlp.down_proj.weight`))
  const layerHost = wBytes * Object.values(linears).reduce((a, [n, k]) => a + n * k, 0) + F32 * (2 * D + biases)
  const largestLinear = wBytes * Math.max(...Object.values(linears).map(([n, k]) => preparedElements(n, k)))
  const hostStaging = Math.max(layerHost + largestLinear, embedBytes * V * D + headBytes * preparedElements(V, D))
  const largestBinding = largest(
    { bytes: F32 * rows * V, what: `one block of logits (${rows} rows × ${V} f32)` },
    { bytes: F32 * chunk * Math.max(I, qDim), what: `one chunk's MLP activations (${chunk} tokens × ${Math.max(I, qDim)} f32)` },
  )
  return {
    length,
    weights,
    kvCache,
    activations,
    total: weights + kvCache + activations,
    hostStaging,
    // weights are split into parts and the table and caches bound in windows, each within the binding
    // limit; what a kernel binds whole is an activation of one chunk
    largestBinding,
    // prepared weights come in parts that fit; a table of its own is one buffer
    largestBuffer: c.tieWordEmbeddings ? largestBinding : { bytes: table, what: `the embedding table (${V} × ${D}, ${embedBytes === 2 ? "16-bit" : "f32"})` },
  }
}

/** One training step (train.ts): f32 parameters; gradients and AdamW moments for what trains; saved layer inputs. */
function trainingPlan(c: LlamaConfig, T: number, train: TrainPlan): MemoryPlan {
  const { D, qDim, kvDim, I, V, L, linears, biases } = shapes(c)
  const H = c.numHeads
  const layerParams = Object.values(linears).reduce((a, [n, k]) => a + n * k, 0) + 2 * D + biases
  const all = V * D * (c.tieWordEmbeddings ? 1 : 2) + D + L * layerParams
  let trained: number
  let loraValues = 0
  if (train.mode === "full") trained = all
  else {
    loraValues = L * train.targets.reduce((a, t) => {
      const s = linears[t]
      return s === undefined ? a : a + train.rank * (s[0] + s[1])
    }, 0)
    trained = loraValues + (train.trainNorms === true ? D + 2 * L * D : 0) + (train.trainEmbeddings === true ? V * D : 0)
  }
  const weights = F32 * all
  const lora = F32 * loraValues
  const gradients = F32 * trained
  const optimizer = 2 * F32 * trained
  const rows = Math.max(1, Math.min(T, Math.floor(TRAIN_LOGIT_FLOATS / V)))
  // Every layer's input is kept; one layer's internals (recomputed) live beside the backward's temporaries,
  // and the pool keeps every size it saw: ~3 sets of a layer's internals. The storage matmul transposes
  // each weight it multiplies by (a layer's worth, and the head), and with every weight training, each
  // weight gradient's product is a temporary too. A block of logits, their gradient and its transpose (a
  // fourth for the head's gradient when the embeddings train). Measured against this: test/models/memory-plan.
  const headTrains = train.mode === "full" || train.trainEmbeddings === true
  const saved = (L + 1) * T * D
  const internals = T * (4 * D + 2 * qDim + 2 * kvDim + H + 3 * I)
  // the last layers' internals are kept from the forward, as many as KEEP_ACTIVATION_BYTES holds (train.ts)
  const layerActs = T * (3 * D + 2 * qDim + 2 * kvDim + 3 * I + H)
  const keptLayers = Math.max(1, Math.min(L, Math.floor(KEEP_ACTIVATION_BYTES / (F32 * layerActs))))
  const repacks = layerParams + preparedElements(V, D) + (train.mode === "full" ? layerParams : 0) + (headTrains ? V * D : 0)
  // The training attention kernels and the llvmpipe matmul read activations through pooled texture copies
  // (kernels/matmul.ts textureOperand: rows padded to 64 floats, a spare texel column and row); the pool
  // keeps each size it saw: up to four at the widest activation.
  const texRows = (T <= 512 ? Math.ceil(T / 64) * 64 : Math.ceil(T / 512) * 512) + 1
  const textureCopies = 4 * texRows * (Math.ceil(Math.max(I, qDim, D) / 64) * 64 + 4)
  const activations = F32 * (saved + 3 * internals + (keptLayers - 1) * layerActs + repacks + textureCopies + (headTrains ? 4 : 3) * rows * V)
  const largestLinear = Math.max(...Object.values(linears).map(([n, k]) => n * k))
  const hostStaging = F32 * Math.max(layerParams, V * D, largestLinear)
  return {
    length: T,
    weights,
    kvCache: 0,
    activations,
    gradients,
    optimizer,
    lora,
    total: weights + lora + gradients + optimizer + activations,
    hostStaging,
    // the training kernels bind whole sequences: a layer's MLP activations are the widest
    largestBinding: { bytes: F32 * T * Math.max(I, qDim), what: `one layer's MLP activations (${T} tokens × ${Math.max(I, qDim)} f32)` },
    largestBuffer: largest(
      { bytes: F32 * V * D, what: `the embedding table (${V} × ${D} f32)` },
      { bytes: F32 * T * Math.max(I, qDim), what: `one layer's MLP activations (${T} tokens × ${Math.max(I, qDim)} f32)` },
    ),
  }
}

const largest = (a: PlanPart, b: PlanPart): PlanPart => (a.bytes >= b.bytes ? a : b)

