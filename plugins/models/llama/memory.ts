/**
 * The llama family's memory plan: what loading and running a folder will allocate, computed from config.json
 * and the tensor headers before anything is read, mirroring what model.ts (scoring) and train.ts (training)
 * allocate. test/models/memory-plan.test.ts holds the plan against the bytes measured on the device.
 */
import type { Half } from "../../../kernels/tensor.ts"
import type { MemoryOptions, MemoryPlan, PlanKernels, PlanPart, PlannedModel, TrainPlan } from "../family.ts"
import type { LlamaConfig } from "./config.ts"
import { DEFAULT_CHUNK, type InspectedLlama, LOGIT_FLOATS } from "./model.ts"
import { layerPrefix } from "./weights.ts"
import { attentionWindows, defaultPageRows, textureWindowRows } from "../../../kernels/attention.ts"
import { defaultWeightStorage, operandTextureSize, weightLayout } from "../../../kernels/matmul.ts"
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

/** Elements of a prepared weight W [n, k] in storage: stored transposed, K padded to 4, N to a 16-column block. */
const preparedElements = (n: number, k: number): number => Math.ceil(k / 4) * 4 * Math.ceil(n / 16) * 16

/** The kernels a plan counts when none are named: the cpu kernels (the larger layouts) at WebGPU's default limits. */
const DEFAULT_KERNELS: PlanKernels = { profile: "cpu", maxTextureDimension2D: 8192, maxStorageBufferBindingSize: 2 ** 27, maxBufferSize: 2 ** 28 }

/** The plan at `length` tokens: scoring (chunks of `chunk`, a KV cache) or, with `train`, one training step of `length` tokens. */
export function llamaMemory(model: PlannedModel, length: number, options: MemoryOptions = {}): MemoryPlan {
  const c = model.config as LlamaConfig
  return options.train === undefined ? scoringPlan(c, fileDtype(model), length, options) : trainingPlan(c, length, options.train, options.kernels ?? DEFAULT_KERNELS)
}

type Dtype = "f32" | Half

/** A tensor's dtype in the folder (16-bit weights stay 16-bit on the device); f32 without a folder. */
function fileDtype(model: PlannedModel): (name: string) => Dtype {
  const ckpt = "checkpoint" in model ? (model as InspectedLlama).checkpoint : undefined
  return (name) => {
    const d = ckpt?.get(name)?.dtype
    return d === "F16" ? "f16" : d === "BF16" ? "bf16" : "f32"
  }
}

const bytesOf = (d: Dtype): number => (d === "f32" ? F32 : 2)

/** HF names of a layer's linears, by the module names `shapes` uses (Phi-3's fused ones split alike). */
const MODULE_TENSORS: Readonly<Record<string, string>> = {
  q_proj: "self_attn.q_proj.weight", k_proj: "self_attn.k_proj.weight", v_proj: "self_attn.v_proj.weight", o_proj: "self_attn.o_proj.weight",
  gate_proj: "mlp.gate_proj.weight", up_proj: "mlp.up_proj.weight", down_proj: "mlp.down_proj.weight",
}
const FUSED: Readonly<Record<string, string>> = { q_proj: "self_attn.qkv_proj.weight", k_proj: "self_attn.qkv_proj.weight", v_proj: "self_attn.qkv_proj.weight", gate_proj: "mlp.gate_up_proj.weight", up_proj: "mlp.gate_up_proj.weight" }

const ceil16 = (v: number): number => Math.ceil(v / 16) * 16
const ceil64 = (v: number): number => Math.ceil(v / 64) * 64

/**
 * Scoring (model.ts): weights in their file dtype, a paged K and V cache per layer, one chunk's working
 * buffers, in the layouts of the kernels that will run (`options.kernels`).
 */
function scoringPlan(c: LlamaConfig, dtype: (name: string) => Dtype, length: number, o: MemoryOptions): MemoryPlan {
  const { D, qDim, kvDim, I, V, L, linears, biases } = shapes(c)
  const k = o.kernels ?? DEFAULT_KERNELS
  const cpu = k.profile === "cpu"
  /** A prepared weight's bytes as the kernels lay it out: textures (spare texels included) or storage. */
  const prepared = (n: number, kk: number, d: Dtype): number =>
    weightLayout(n, kk, d, defaultWeightStorage(k.profile, kk, k), k).parts.reduce((a, p) => a + p.bytes, 0)
  const embedDtype = dtype("model.embed_tokens.weight")
  const headDtype = c.tieWordEmbeddings ? embedDtype : dtype("lm_head.weight")
  let layerWeights = 0
  for (let l = 0; l < L; l++) {
    for (const [m, [n, kk]] of Object.entries(linears)) layerWeights += prepared(n, kk, dtype(layerPrefix(l) + (c.fused ? FUSED[m] ?? MODULE_TENSORS[m]! : MODULE_TENSORS[m]!)))
  }
  // the embedding table is a storage buffer in the file's dtype and the head a prepared weight; a tied
  // head is the only copy (the lookup reads its rows); norms and biases f32
  const embedBytes = bytesOf(embedDtype)
  const table = c.tieWordEmbeddings ? 0 : V * D * embedBytes
  const weights = table + prepared(V, D, headDtype) + layerWeights + F32 * (D + L * (2 * D + biases))
  // The cache keeps the weights' precision unless asked; its rows come in pages (each one allocated
  // whole); a 16-bit page is widened into an f32 scratch page of K and of V while attended.
  const kvBytes = o.kvCache === undefined ? (embedBytes === 2 ? 2 : F32) : o.kvCache === "f32" ? F32 : 2
  const pageRows = defaultPageRows(length, c.numKvHeads, c.headDim)
  const pages = Math.ceil(length / pageRows)
  const kvCache = 2 * L * pages * pageRows * kvDim * kvBytes + (kvBytes === 2 ? 2 * pageRows * kvDim * F32 : 0)
  const chunk = Math.max(1, Math.min(length, o.chunk ?? DEFAULT_CHUNK))
  // The runtime pools buffers by size and keeps them: what one chunk allocates stays for the next, and a
  // last, shorter chunk allocates a second set of sizes (counted as a full one: the plan must grow with
  // length, and is not 1 again at exact multiples).
  const sets = length - 1 > chunk ? 2 : 1
  const activations = sets * chunkBytes(c, chunk, cpu, k.maxTextureDimension2D) + (cpu ? textureBytes(c, length, chunk, pageRows, k.maxTextureDimension2D) : 0) +
    L * Math.ceil(c.headDim / 8) * 64 // the RoPE table
  // loading reads one layer at a time (in the file's dtype) and transposes one matrix beside it; the
  // embedding is read whole and the head transposed from it
  const wBytes = Math.max(embedBytes, bytesOf(dtype(`${layerPrefix(0)}mlp.down_proj.weight`)))
  const layerHost = wBytes * Object.values(linears).reduce((a, [n, kk]) => a + n * kk, 0) + F32 * (2 * D + biases)
  const largestLinear = wBytes * Math.max(...Object.values(linears).map(([n, kk]) => preparedElements(n, kk)))
  const hostStaging = Math.max(layerHost + largestLinear, embedBytes * V * D + bytesOf(headDtype) * preparedElements(V, D))
  const rows = logitRows(c, chunk)
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

/** Rows of logits per lm_head product (model.ts: rows × vocab stays under LOGIT_FLOATS). */
const logitRows = (c: LlamaConfig, chunk: number): number => Math.max(1, Math.min(chunk, Math.floor(LOGIT_FLOATS / c.vocabSize)))

/**
 * Rows of the logit blocks of a chunk, by distinct size: one block, or blocks of `rows` and a remainder
 * (bounded by rows − 1, so that the figure grows with the chunk).
 */
function logitBlocks(c: LlamaConfig, chunk: number): readonly number[] {
  const rows = logitRows(c, chunk)
  return rows >= chunk ? [chunk] : [rows, Math.min(rows - 1, chunk - rows)]
}

/**
 * Device buffers one chunk of `chunk` tokens allocates (model.ts forwardChunk and the logits after it),
 * each size counted once as the pool reuses it: the residual, the norm's output, q, k, v, attention's
 * output and (max, sum) state, gate, up, SwiGLU's output, token ids and positions; per block of logits
 * its hidden rows, the logits, targets and log-probs (and their readback). The cpu kernels also write whole
 * 16-column blocks (a padded scratch output where a width is not a multiple of 16, and for the residual
 * updates one to add from), repack an operand whose rows are not a multiple of 64 floats before its texture
 * copy, and bind a zero bias as wide as the head.
 */
function chunkBytes(c: LlamaConfig, chunk: number, cpu: boolean, maxTex: number): number {
  const { D, qDim, kvDim, I, V } = shapes(c)
  const blocks = logitBlocks(c, chunk)
  const blockRows = blocks.reduce((a, b) => a + b, 0)
  let floats = chunk * (2 * D + 2 * qDim + 2 * kvDim + 3 * I + 2 + 2 * c.numHeads) + blockRows * (V + 3) + (blocks.length > 1 ? blockRows * D : 0)
  if (cpu) {
    floats += chunk * ceil16(D) + ceil16(V)
    for (const n of [qDim, kvDim, kvDim, I, I]) if (n % 16 !== 0) floats += chunk * ceil16(n)
    if (V % 16 !== 0) floats += blockRows * ceil16(V)
    // (repacked into buffers as tall as the texture)
    const texRows = (rows: number): number => operandTextureSize(rows, 4, maxTex)[1] - 1
    for (const w of new Set([D, qDim, I])) if (w % 64 !== 0) floats += texRows(chunk) * ceil64(w)
    if (D % 64 !== 0 && blocks.length > 1) floats += blocks.reduce((a, b) => a + texRows(b), 0) * ceil64(D)
  }
  return F32 * floats
}

/**
 * The cpu kernels' texture copies (kernels/matmul.ts textureOperand), which model.ts lets go after each
 * chunk's layers: a chunk's input to the linears (a texture per input width, and per block of logits), and
 * attention's K and V, a pair per size of window of keys (kernels/attention.ts), the most in the last chunk.
 * K/V rows not a multiple of 64 floats are repacked first, into pooled buffers (kept: one per size seen).
 */
function textureBytes(c: LlamaConfig, length: number, chunk: number, pageRows: number, maxTex: number): number {
  const { D, qDim, kvDim, I } = shapes(c)
  const tex = (rows: number, cols: number): number => {
    const [w, h] = operandTextureSize(rows, cols, maxTex)
    return w * h * 16
  }
  const blocks = logitBlocks(c, chunk)
  const heads = blocks.length > 1 ? blocks.reduce((a, b) => a + tex(b, D), 0) : 0
  // (the lm_head's input textures are made after a chunk's release, so a chunk's stay into the next one)
  const inputs = [...new Set([D, qDim, I])].reduce((a, w) => a + tex(chunk, w), 0) + heads + (length - 1 > chunk ? heads || tex(chunk, D) : 0)
  const step = Math.min(pageRows, textureWindowRows(maxTex))
  const heights = new Set(attentionWindows(pageRows, length, step).map((w) => operandTextureSize(w.kStop - w.kStart, kvDim, maxTex)[1]))
  const texelsPerRow = operandTextureSize(1, kvDim, maxTex)[0]
  const kv = [...heights].reduce((a, h) => a + 2 * texelsPerRow * h * 16, 0)
  // repack buffers stay pooled, one per texture height any chunk's windows had: walked chunk by chunk, or
  // past MAX_CHUNKS_WALKED chunks every height up to the tallest window (a bound that still grows with length)
  const seen = new Set<number>()
  if (kvDim % 64 !== 0) {
    const chunks = Math.ceil(length / chunk)
    if (chunks <= MAX_CHUNKS_WALKED) {
      for (let i = 1; i <= chunks; i++) for (const w of attentionWindows(pageRows, Math.min(length, i * chunk), step)) seen.add(operandTextureSize(w.kStop - w.kStart, kvDim, maxTex)[1])
    } else {
      for (let rows = 64; rows < Math.min(length, step) + 512; rows += rows < 512 ? 64 : 512) seen.add(operandTextureSize(Math.min(rows, step), kvDim, maxTex)[1])
    }
  }
  const repacks = [...seen].reduce((a, h) => a + 2 * F32 * (h - 1) * ceil64(kvDim), 0)
  return inputs + kv + repacks
}

/** Chunks whose attention windows the plan walks one by one (beyond, it bounds them). */
const MAX_CHUNKS_WALKED = 2048

/**
 * One training step (train.ts): f32 parameters; gradients and AdamW moments for what trains; saved layer
 * inputs; in the layouts of the kernels that will run.
 */
function trainingPlan(c: LlamaConfig, T: number, train: TrainPlan, kernels: PlanKernels): MemoryPlan {
  const { D, qDim, kvDim, I, V, L, linears, biases } = shapes(c)
  const H = c.numHeads
  const cpu = kernels.profile === "cpu"
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
  // Every layer's input is kept, and the internals of the last layers, as many as KEEP_ACTIVATION_BYTES
  // holds (train.ts; a recomputed layer's reuse the pooled buffers of one let go); the backward's
  // temporaries take at most one layer's internals besides. With every weight training, each weight
  // gradient's product is a temporary too. The blocks of logits and their gradients (`trainLogits`).
  // Measured against this: test/models/memory-plan.
  const headTrains = train.mode === "full" || train.trainEmbeddings === true
  const saved = (L + 1) * T * D
  const layerActs = T * (3 * D + 2 * qDim + 2 * kvDim + 3 * I + H)
  const internals = layerActs + T * D
  const keptLayers = Math.max(1, Math.min(L, Math.floor(KEEP_ACTIVATION_BYTES / (F32 * layerActs))))
  const products = (train.mode === "full" ? layerParams : 0) + (headTrains ? V * D : 0)
  const logits = trainLogits(V, T, rows, headTrains, cpu, kernels.maxTextureDimension2D)
  // The training attention kernels (both profiles) read K, V, Q and dO through pooled texture copies
  // (kernels/matmul.ts textureOperand) while a sequence fits a texture; the cpu matmul also copies every
  // operand it multiplies (a layer's weights and the head; activations up to the widest).
  const copies = cpu ? cpuTrainCopies(c, T, layerParams) : gpuTrainCopies(c, T, kernels.maxTextureDimension2D)
  const activations = F32 * (saved + keptLayers * layerActs + internals + products + logits + copies)
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

/**
 * Floats of a training step's logit blocks (train.ts headAndLoss: `rows` at a time, a shorter last block a
 * second set of sizes the pool keeps): each block's logits and their gradient; the cpu kernels also pad
 * the logits to 16 columns, copy the gradient into a texture (after repacking rows not a multiple of 64
 * floats), and once more when the head trains.
 */
function trainLogits(V: number, T: number, rows: number, headTrains: boolean, cpu: boolean, maxTex: number): number {
  const blocks = rows >= T ? [T] : [rows, Math.min(rows - 1, T - rows)]
  return blocks.reduce((a, b) => {
    if (!cpu) return a + 2 * b * V
    const [w, h] = operandTextureSize(b, V, maxTex)
    return a + (headTrains ? 3 : 2) * b * V + (V % 16 === 0 ? 0 : b * ceil16(V)) + w * h * 4 + (V % 64 === 0 ? 0 : (h - 1) * ceil64(V))
  }, 0)
}

/** Floats of the cpu kernels' copies in a training step: the weights of a layer and the head, and four texture copies of the widest activation. */
function cpuTrainCopies(c: LlamaConfig, T: number, layerParams: number): number {
  const { D, qDim, I, V } = shapes(c)
  const texRows = (T <= 512 ? Math.ceil(T / 64) * 64 : Math.ceil(T / 512) * 512) + 1
  return layerParams + preparedElements(V, D) + 4 * texRows * (ceil64(Math.max(I, qDim, D)) + 4)
}

/**
 * Floats of the gpu kernels' copies in a training step: only attention's streamed K, V, Q and dO, while T
 * fits a texture (kernels/attention-backward.ts), each width not a multiple of 64 floats repacked first
 * into a pooled buffer (one per width).
 */
function gpuTrainCopies(c: LlamaConfig, T: number, maxTex: number): number {
  const { qDim, kvDim } = shapes(c)
  if (T >= maxTex - 64) return 0
  const copy = (cols: number): number => {
    const [w, h] = operandTextureSize(T, cols, maxTex)
    return 2 * w * h * 4
  }
  const repacks = [...new Set([qDim, kvDim])].reduce((a, cols) => a + (cols % 64 === 0 ? 0 : (operandTextureSize(T, cols, maxTex)[1] - 1) * ceil64(cols)), 0)
  return copy(kvDim) + copy(qDim) + repacks
}

const largest = (a: PlanPart, b: PlanPart): PlanPart => (a.bytes >= b.bytes ? a : b)

