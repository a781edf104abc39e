/**
 * The llama-family forward on WGSL kernels, for next-token log-probabilities under a RoPE table.
 *
 * Long inputs go through in chunks: each chunk's keys/values are appended to a per-layer KV cache and its
 * queries attend to everything before them, so memory is O(T·d) (cache) + O(chunk·(d + V)), never T² or
 * T·V. Semantics are transformers' (rotate_half RoPE, GQA, RMSNorm, SwiGLU, tied head).
 */
import { type KvCache, type KvCacheOptions, appendKv, attention, createKvCache, kvRows, kvScratch, prepareAttention, releaseKvCache, storeKvRows } from "../../../kernels/attention.ts"
import { embed, embedFromWeight } from "../../../kernels/embedding.ts"
import { logprobsFromLogits } from "../../../kernels/logprobs.ts"
import { type Weight, linear, linearMany, prepareWeight, prepareWeight16, releaseWeight } from "../../../kernels/matmul.ts"
import { uploadHalf } from "../../../kernels/pack16.ts"
import { rmsnorm } from "../../../kernels/rmsnorm.ts"
import { type GpuRopeTable, applyRope, releaseRopeTable, uploadRopeTable } from "../../../kernels/rope.ts"
import { inverseRopeTable } from "../../../kernels/rope-backward.ts"
import type { RopeTable } from "../../../kernels/rope-table.ts"
import type { GpuRuntime } from "../../../kernels/runtime.ts"
import { swiglu } from "../../../kernels/swiglu.ts"
import type { Half, HalfTensor, Tensor } from "../../../kernels/tensor.ts"
import { settleTuning } from "../../../kernels/tuning.ts"
import { inputError } from "../../../common/errors.ts"
import { type ChosenTable, resolveRope } from "../../rope/index.ts"
import { sameRopeTable } from "../../rope/table.ts"
import { Checkpoint, type RawTensor, rawToF32, type TensorSource } from "../../../common/safetensors.ts"
import { AdaptedWeights, readPeftAdapter } from "../../../training/peft.ts"
import { type ConfigOptions, type LlamaConfig, readLlamaConfig } from "./config.ts"
import { type RawLayer, readRawLayer, validateCheckpoint } from "./weights.ts"

const HALF: Readonly<Record<"F16" | "BF16", Half>> = { F16: "f16", BF16: "bf16" }

export { sameRopeTable }

export const DEFAULT_CHUNK = 512
/** Logit rows per lm_head matmul are capped so that rows × vocab stays under this many floats (64 MiB). */
export const LOGIT_FLOATS = 16 * 1024 * 1024

/** A model folder checked without touching the GPU: config, tensor headers and the RoPE method. */
export interface InspectedLlama {
  readonly config: LlamaConfig
  /** The weights; with a LoRA adapter in the folder (PEFT's layout), merged in as they are read. */
  readonly checkpoint: TensorSource
  /** The RoPE table for an input length (resolved from config.json's rope_scaling or the override). */
  readonly rope: (length: number) => ChosenTable
}

export interface InspectOptions extends ConfigOptions {
  /** What RoPE errors name (e.g. "--rope-scaling" when the scaling came from the command line). */
  readonly ropeSource?: string
}

/** The folder's weights: its checkpoint, with the folder's LoRA adapter (if any) merged in, headers checked. */
export function openWeights(config: LlamaConfig, dir: string): TensorSource {
  const base = Checkpoint.open(dir)
  validateCheckpoint(config, base)
  const adapter = readPeftAdapter(dir)
  return adapter === undefined ? base : new AdaptedWeights(base, adapter)
}

/** Reads config.json, opens the checkpoint (and adapter) and validates every tensor's name, dtype and shape. */
export function inspectLlama(dir: string, options: InspectOptions = {}): InspectedLlama {
  const config = readLlamaConfig(dir, options)
  // the weights first: they bound every size config.json claims (RoPE tables are sized by the head dimension)
  const checkpoint = openWeights(config, dir)
  const rope = options.ropeSource === undefined ? resolveRope(config.rope) : resolveRope(config.rope, options.ropeSource)
  return { config, checkpoint, rope }
}

/** How the KV cache is kept: its element type (default: the weights' dtype, f32 for f32 weights) and rows per page. */
export interface KvOptions {
  /** f32, or f16 / bf16 (half the memory; each cached row rounded once). */
  readonly kvCache?: "f32" | Half
  /** Rows per cache page (default: as many as one storage binding holds; one asked for is rounded up to the attention kernel's key tile, kernels/attention.ts pageQuantum). Tests force small pages. */
  readonly pageRows?: number
}

export interface LogprobsOptions extends KvOptions {
  /** Overrides the table the model's RoPE method picks for this length. */
  readonly rope?: RopeTable
  /** Tokens per forward chunk (default 512). */
  readonly chunk?: number
  /** What token errors name (the tokens file). */
  readonly source?: string
  /** Logit rows per lm_head matmul (default: as many as keep rows × vocab under 16M floats). */
  readonly logitRows?: number
}

export interface LlamaModel {
  readonly config: LlamaConfig
  readonly rope: (length: number) => ChosenTable
  /** `out[i] = ln p(tokens[i+1] | tokens[0..i])`, length n−1. */
  logprobs(tokens: Uint32Array | readonly number[], options?: LogprobsOptions): Promise<Float64Array>
  /** A KV-cache session for incremental decoding of up to `capacity` tokens (see LlamaSession). */
  session(capacity: number, options?: KvOptions): LlamaSession
  /** The KV cache's element type when none is asked for: the weights' 16-bit dtype, else f32. */
  readonly kvDtype: "f32" | Half
  /**
   * Full next-token distributions at every position under each of several tables, for comparisons that
   * need whole distributions (KL between RoPE settings). Same positions as `logprobs`: row p is
   * ln softmax of the logits after tokens[0..p], p = 0..n−2. Rows arrive in blocks through `onRows`
   * (awaited), all tables for the same positions together, so host memory stays at one block ×
   * tables × vocab, never T×V. Log-softmax in float64 on the host from the f32 logits.
   */
  distributions(tokens: Uint32Array | readonly number[], tables: readonly RopeTable[], onRows: DistributionRows, options?: DistributionOptions): Promise<void>
  dispose(): void
}

/** A block of rows from `distributions`: `rows[k]` holds `count` rows of `vocab` ln-probs under table k, for positions from.. */
export type DistributionRows = (from: number, count: number, rows: readonly Float64Array[]) => void | Promise<void>

export interface DistributionOptions extends KvOptions {
  /** Tokens per forward chunk (default 512). */
  readonly chunk?: number
  /** Rows per block (default: as many as keep rows × vocab × tables under 16M floats, at most a chunk). */
  readonly logitRows?: number
  readonly source?: string
}

/**
 * Incremental decoding over one KV cache per layer. The cached keys were all rotated with one table,
 * `table`; feeding with another table first needs `rerotate` (O(cache), see there) or `reset` (re-prefill).
 */
export interface LlamaSession {
  /** Tokens in the cache (the next token fed sits at this position). */
  readonly length: number
  readonly capacity: number
  /** The table the cached keys carry (undefined while the cache is empty). */
  readonly table: RopeTable | undefined
  /**
   * Runs `tokens` at positions length.. (in chunks), appends their K/V and returns ln p(next token) over
   * the whole vocabulary for the last one, in float64. `table` must equal `this.table` unless the cache
   * is empty.
   */
  feed(tokens: Uint32Array | readonly number[], table: RopeTable, options?: { readonly chunk?: number; readonly source?: string }): Promise<Float64Array>
  /**
   * Turns every cached key into what `table` would have made of the same unrotated key: per row, undo the
   * old rotation and scale (R(−nθ_old)/m_old, or R(−nθ_0) below the old n̂), then apply the new one
   * (m_new·R(nθ_new), or R(nθ_0) below the new n̂). Values carry no position, so they stay. Page by page:
   * an f32 page in place, a 16-bit one widened, turned and rounded back.
   *
   * Exact for the first layer only: deeper layers' cached keys and values were computed from hidden
   * states that attended under the old table, and a fresh prefill would recompute those too. So in a
   * multi-layer model this is an O(cache) approximation of a re-prefill, not the same result.
   */
  rerotate(table: RopeTable): void
  /** Empties the cache (the buffers are kept for the next feed). */
  reset(): void
  dispose(): void
}

interface GpuLayer {
  readonly inputNorm: Tensor
  readonly q: Weight
  readonly k: Weight
  readonly v: Weight
  readonly o: Weight
  readonly qBias: Tensor | undefined
  readonly kBias: Tensor | undefined
  readonly vBias: Tensor | undefined
  readonly oBias: Tensor | undefined
  readonly postNorm: Tensor
  readonly gate: Weight
  readonly up: Weight
  readonly down: Weight
  readonly gateBias: Tensor | undefined
  readonly upBias: Tensor | undefined
  readonly downBias: Tensor | undefined
}

/** Throws an InputError naming the index and id of the first token outside [0, vocab). */
export function checkTokens(tokens: Uint32Array | readonly number[], vocabSize: number, source = "tokens"): void {
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!
    if (!Number.isInteger(t) || t < 0 || t >= vocabSize) {
      throw inputError(source, `token ${t} at index ${i} is outside the vocabulary (vocab_size ${vocabSize}: ids 0..${vocabSize - 1})`)
    }
  }
}

/** Everything about a token sequence that can be checked before running: ids in the vocabulary, and a
 *  length the attention implements (full causal attention; no sliding window). */
export function checkSequence(c: LlamaConfig, tokens: Uint32Array | readonly number[], source = "tokens"): void {
  checkTokens(tokens, c.vocabSize, source)
  if (c.slidingWindow !== undefined && tokens.length > c.slidingWindow) {
    throw inputError(c.file, `sliding_window ${c.slidingWindow} is shorter than the ${tokens.length}-token input; sliding-window attention is not implemented (set sliding_window to null for full attention)`)
  }
}

/**
 * Waits for the uploads so far and collects the host copies they came from. Without it, peak process memory
 * while loading is about twice the weights: the device's staging copies live until the queue drains, and the
 * garbage collector lets each layer's host arrays pile up (Bun's collector is asked directly; elsewhere it
 * runs when it will).
 */
async function settle(rt: GpuRuntime): Promise<void> {
  await rt.sync()
  ;(globalThis as { Bun?: { gc(force: boolean): void } }).Bun?.gc(true)
}

/** Everything a load uploads, recorded so that a failed load and dispose() free exactly what exists. */
class Uploads {
  private readonly tensors: Tensor[] = []
  private readonly halves: HalfTensor[] = []
  private readonly weights: Weight[] = []
  constructor(readonly rt: GpuRuntime) {}

  /** An f32 tensor from a stored one of any float dtype. */
  f32(raw: RawTensor, shape?: readonly number[]): Tensor {
    const t = this.rt.upload(rawToF32(raw), shape)
    this.tensors.push(t)
    return t
  }

  bias(b: RawTensor | undefined): Tensor | undefined {
    return b === undefined ? undefined : this.f32(b)
  }

  /** A projection [n, k] in the file's dtype: 16-bit weights stay 16-bit on the device. */
  weight(raw: RawTensor, n: number, k: number): Weight {
    const w = raw.dtype === "F32" ? prepareWeight(this.rt, raw.data, n, k) : prepareWeight16(this.rt, raw.data, HALF[raw.dtype], n, k)
    this.weights.push(w)
    return w
  }

  /** The embedding table [vocab, D], f32 or in its 16-bit dtype. */
  table(raw: RawTensor, shape: readonly [number, number]): Tensor | HalfTensor {
    if (raw.dtype === "F32") return this.f32(raw, shape)
    const h = uploadHalf(this.rt, raw.data, shape, HALF[raw.dtype])
    this.halves.push(h)
    return h
  }

  release(): void {
    this.rt.flush()
    this.rt.release(...this.tensors.splice(0))
    for (const h of this.halves.splice(0)) this.rt.releaseBuffer(h.buffer)
    for (const w of this.weights.splice(0)) releaseWeight(this.rt, w)
  }
}

/** The weights on the device. */
interface DeviceWeights {
  /** The embedding table; undefined when tied: the lookup reads the head's prepared weight (one copy on the device). */
  readonly embedTable: Tensor | HalfTensor | undefined
  readonly lmHead: Weight
  readonly finalNorm: Tensor
  readonly layers: readonly GpuLayer[]
}

/** A loaded model: its config and weights on the device; `disposed` is set once, by dispose(). */
interface DeviceLlama extends DeviceWeights {
  readonly rt: GpuRuntime
  readonly c: LlamaConfig
  /** The KV cache's element type when none is asked for. */
  readonly kvDtype: "f32" | Half
  /** Rows per page of the caches made last (`layerCaches`): the size the runtime's pool holds pages of. */
  pageRows: number | undefined
  disposed: boolean
}

/** Uploads the checkpoint's weights, one layer on the host at a time in its file dtype (host memory stays at one layer's size). */
async function uploadWeights(u: Uploads, c: LlamaConfig, checkpoint: TensorSource): Promise<DeviceWeights> {
  const D = c.hiddenSize
  const embedRaw = checkpoint.readRaw("model.embed_tokens.weight")
  const embedTable = c.tieWordEmbeddings ? undefined : u.table(embedRaw, [c.vocabSize, D])
  const lmHead = u.weight(c.tieWordEmbeddings ? embedRaw : checkpoint.readRaw("lm_head.weight"), c.vocabSize, D)
  await settle(u.rt)
  const finalNorm = u.f32(checkpoint.readRaw("model.norm.weight"))
  const layers: GpuLayer[] = []
  for (let i = 0; i < c.numLayers; i++) {
    layers.push(uploadLayer(u, c, readRawLayer(c, checkpoint, i)))
    await settle(u.rt)
  }
  return { embedTable, lmHead, finalNorm, layers }
}

function uploadLayer(u: Uploads, c: LlamaConfig, h: RawLayer): GpuLayer {
  const D = c.hiddenSize
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  const I = c.intermediateSize
  return {
    inputNorm: u.f32(h.inputNorm),
    q: u.weight(h.q, qDim, D),
    k: u.weight(h.k, kvDim, D),
    v: u.weight(h.v, kvDim, D),
    o: u.weight(h.o, D, qDim),
    qBias: u.bias(h.qBias),
    kBias: u.bias(h.kBias),
    vBias: u.bias(h.vBias),
    oBias: u.bias(h.oBias),
    postNorm: u.f32(h.postNorm),
    gate: u.weight(h.gate, I, D),
    up: u.weight(h.up, I, D),
    down: u.weight(h.down, D, I),
    gateBias: u.bias(h.gateBias),
    upBias: u.bias(h.upBias),
    downBias: u.bias(h.downBias),
  }
}

/** The cache keeps the weights' precision unless asked otherwise: bf16 if any weight is, else f16 if any is, else f32. */
function weightsDtype(checkpoint: TensorSource): "f32" | Half {
  const dtypes = [...checkpoint.tensors.values()].map((t) => t.dtype)
  return dtypes.includes("BF16") ? "bf16" : dtypes.includes("F16") ? "f16" : "f32"
}

function kvOptions(m: DeviceLlama, o: KvOptions): KvCacheOptions {
  return {
    dtype: o.kvCache ?? m.kvDtype,
    ...(o.pageRows === undefined ? {} : { pageRows: o.pageRows }),
  }
}

/**
 * One KV cache per layer for `capacity` rows (no page allocated yet). Pages are sized by the capacity, so
 * pages pooled by a call at another length (and the scratch pages and last chunk's buffers sized alike)
 * would never be reused, only kept: when the page size changes, the runtime's pooled buffers are let go
 * first. Scoring at several lengths (a search's fidelities and its penalty at L0, evaluate's lengths) then
 * holds one length's buffers at a time, as the memory plan at the longest counts.
 */
function layerCaches(m: DeviceLlama, capacity: number, options: KvOptions): KvCache[] {
  const { rt, c } = m
  const caches = m.layers.map(() => createKvCache(rt, capacity, c.numKvHeads, c.headDim, kvOptions(m, options)))
  const pageRows = caches[0]?.pageRows
  if (m.pageRows !== undefined && pageRows !== m.pageRows) {
    rt.flush() // recorded work may still use pooled buffers
    rt.trim()
  }
  m.pageRows = pageRows
  return caches
}

function checkAlive(m: DeviceLlama): void {
  if (m.disposed) throw new Error("llama: model used after dispose()")
}

/** Loads a folder (or an already inspected one) onto the GPU. */
export async function loadLlama(rt: GpuRuntime, source: string | InspectedLlama, options: InspectOptions = {}): Promise<LlamaModel> {
  const inspected = typeof source === "string" ? inspectLlama(source, options) : source
  const { config: c, checkpoint } = inspected
  // the scoring attention's first compile on a machine is LLVM's largest: done, and its memory handed back, before the weights arrive
  await prepareAttention(rt, c.numHeads, c.numKvHeads, c.headDim, DEFAULT_CHUNK)
  const uploads = new Uploads(rt)
  let weights: DeviceWeights
  try {
    weights = await uploadWeights(uploads, c, checkpoint)
  } catch (e) {
    uploads.release()
    throw e
  }
  const m: DeviceLlama = { rt, c, ...weights, kvDtype: weightsDtype(checkpoint), pageRows: undefined, disposed: false }
  return {
    config: c,
    rope: inspected.rope,
    kvDtype: m.kvDtype,
    logprobs: (tokens, o = {}) => logprobs(m, inspected.rope, tokens, o),
    session: (capacity, o = {}) => openSession(m, capacity, o),
    distributions: (tokens, tables, onRows, o = {}) => distributions(m, tokens, tables, onRows, o),
    dispose() {
      if (m.disposed) return
      m.disposed = true
      uploads.release()
    },
  }
}

/** `out[i] = ln p(tokens[i+1] | tokens[0..i])`, chunk by chunk over one KV cache per layer. */
async function logprobs(m: DeviceLlama, ropeFor: (length: number) => RopeTable, tokens: Uint32Array | readonly number[], options: LogprobsOptions): Promise<Float64Array> {
  checkAlive(m)
  const { rt, c } = m
  const n = tokens.length
  checkSequence(c, tokens, options.source)
  const out = new Float64Array(Math.max(0, n - 1))
  if (n < 2) return out
  const chunk = Math.max(1, Math.floor(options.chunk ?? DEFAULT_CHUNK))
  const ids = Uint32Array.from(tokens)
  // The last token is only a target: nothing attends to it and its prediction is not scored, so only
  // positions 0..n-2 go through the model. The table is still the one for length n (HF semantics).
  const len1 = n - 1
  const table = uploadRopeTable(rt, options.rope ?? ropeFor(n), c.numLayers)
  const caches = layerCaches(m, len1, options)
  const logitRows = Math.max(1, Math.min(chunk, Math.floor(options.logitRows ?? LOGIT_FLOATS / c.vocabSize)))
  try {
    for (let start = 0; start < len1; start += chunk) {
      const len = Math.min(chunk, len1 - start)
      const x = forwardChunk(m, ids.subarray(start, start + len), start, table, caches)
      // Row p predicts token p+1.
      for (let r = 0; r < len; r += logitRows) {
        const rows = Math.min(logitRows, len - r)
        const part = rows === len ? x : sliceRows(rt, x, r, rows, c.hiddenSize)
        const logits = linear(rt, part, m.lmHead)
        const targets = rt.upload(ids.subarray(start + r + 1, start + r + 1 + rows))
        const lp = logprobsFromLogits(rt, logits, targets)
        rt.release(logits, targets)
        if (part !== x) rt.release(part)
        const values = await rt.read(lp)
        rt.release(lp)
        for (let j = 0; j < rows; j++) out[start + r + j] = values[j]!
      }
      rt.release(x)
    }
  } finally {
    for (const cache of caches) releaseKvCache(rt, cache)
    releaseRopeTable(rt, table)
  }
  await settleTuning(rt) // shapes seen for the first time on this machine: time their variants now
  return out
}

/** LlamaModel.distributions: every table's KV caches advance through the sequence in lockstep, chunk by chunk. */
async function distributions(m: DeviceLlama, tokens: Uint32Array | readonly number[], tables: readonly RopeTable[], onRows: DistributionRows, options: DistributionOptions): Promise<void> {
  checkAlive(m)
  const { rt, c } = m
  if (tables.length === 0) throw new Error("llama distributions: at least one table")
  const n = tokens.length
  checkSequence(c, tokens, options.source)
  if (n < 2) return
  const chunk = Math.max(1, Math.floor(options.chunk ?? DEFAULT_CHUNK))
  const ids = Uint32Array.from(tokens)
  const len1 = n - 1
  const V = c.vocabSize
  const logitRows = Math.max(1, Math.min(chunk, Math.floor(options.logitRows ?? LOGIT_FLOATS / (V * tables.length))))
  const gpuTables: GpuRopeTable[] = []
  const caches: KvCache[][] = []
  try {
    for (const t of tables) {
      gpuTables.push(uploadRopeTable(rt, t, c.numLayers))
      caches.push(layerCaches(m, len1, options))
    }
    for (let start = 0; start < len1; start += chunk) {
      const len = Math.min(chunk, len1 - start)
      const hidden = gpuTables.map((t, k) => forwardChunk(m, ids.subarray(start, start + len), start, t, caches[k]!))
      try {
        for (let r = 0; r < len; r += logitRows) {
          const rows = Math.min(logitRows, len - r)
          const blocks: Float64Array[] = []
          for (const x of hidden) blocks.push(await logSoftmaxRows(m, x, r, rows, len))
          await onRows(start + r, rows, blocks)
        }
      } finally {
        rt.release(...hidden)
      }
    }
  } finally {
    for (const cs of caches) for (const cache of cs) releaseKvCache(rt, cache)
    for (const t of gpuTables) releaseRopeTable(rt, t)
  }
}

/** ln softmax of rows [r, r+rows) of the hidden states x [len, D], through the lm_head, in float64 on the host. */
async function logSoftmaxRows(m: DeviceLlama, x: Tensor, r: number, rows: number, len: number): Promise<Float64Array> {
  const { rt } = m
  const V = m.c.vocabSize
  const part = rows === len ? x : sliceRows(rt, x, r, rows, m.c.hiddenSize)
  const logits = linear(rt, part, m.lmHead)
  if (part !== x) rt.release(part)
  const values = await rt.read(logits)
  rt.release(logits)
  const out = new Float64Array(rows * V)
  for (let j = 0; j < rows; j++) logSoftmaxInto(values, j * V, V, out)
  return out
}

/** One chunk (`ids`, at positions start..) through every layer and the final norm; returns the normed hidden states [len, D]. */
function forwardChunk(m: DeviceLlama, ids: Uint32Array, start: number, table: GpuRopeTable, caches: readonly KvCache[]): Tensor {
  const { rt, c } = m
  const len = ids.length
  const idT = rt.upload(ids)
  const positions = new Uint32Array(len)
  for (let i = 0; i < len; i++) positions[i] = start + i
  const posT = rt.upload(positions)
  const x = m.embedTable === undefined ? embedFromWeight(rt, m.lmHead, idT) : embed(rt, m.embedTable, idT)

  for (let l = 0; l < m.layers.length; l++) {
    const w = m.layers[l]!
    const h = rmsnorm(rt, x, w.inputNorm, c.rmsNormEps)
    const [q, k, v] = linearMany(rt, h, [{ w: w.q, bias: w.qBias }, { w: w.k, bias: w.kBias }, { w: w.v, bias: w.vBias }]) as [Tensor, Tensor, Tensor]
    rt.release(h)
    applyRope(rt, q, posT, table, { heads: c.numHeads, headDim: c.headDim, layer: l })
    applyRope(rt, k, posT, table, { heads: c.numKvHeads, headDim: c.headDim, layer: l })

    const cache = caches[l]!
    appendKv(rt, cache, k, v, start)

    rt.release(k, v)
    const a = attention(rt, q, cache, { heads: c.numHeads, queryOffset: start, scale: 1 / Math.sqrt(c.headDim) })
    rt.release(q)
    // x += a·Woᵀ (+ b): the residual update, in place (likewise the MLP's down projection below)
    linearMany(rt, a, [{ w: w.o, bias: w.oBias, addTo: x }])
    rt.release(a)
    const h2 = rmsnorm(rt, x, w.postNorm, c.rmsNormEps)
    const [g, u] = linearMany(rt, h2, [{ w: w.gate, bias: w.gateBias }, { w: w.up, bias: w.upBias }]) as [Tensor, Tensor]
    rt.release(h2)
    const mlp = swiglu(rt, g, u)
    rt.release(g, u)
    linearMany(rt, mlp, [{ w: w.down, bias: w.downBias, addTo: x }])
    rt.release(mlp)
  }
  const normed = rmsnorm(rt, x, m.finalNorm, c.rmsNormEps)
  rt.release(x, idT, posT)
  // The cpu kernels' texture copies of K/V have a size per window of keys, which grows chunk by chunk:
  // kept, every chunk's would add up (quadratic in length); so the idle ones go after each chunk.
  rt.releaseIdleTextures()
  return normed
}

/** Rows [from, from+rows) of x [*, width] as a new tensor (a recorded copy, in batch order). */
function sliceRows(rt: GpuRuntime, x: Tensor, from: number, rows: number, width: number): Tensor {
  const t = rt.tensor([rows, width])
  rt.copy(x.buffer, from * width * 4, t.buffer, 0, rows * width * 4)
  return t
}

/** A session's state: one KV cache per layer, the tokens in them and the table their keys carry. */
interface Session {
  readonly caches: readonly KvCache[]
  readonly capacity: number
  length: number
  table: RopeTable | undefined
  gpuTable: GpuRopeTable | undefined
  closed: boolean
}

function openSession(m: DeviceLlama, capacity: number, options: KvOptions): LlamaSession {
  checkAlive(m)
  const { rt } = m
  if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`llama session: capacity ${capacity} must be an integer ≥ 1`)
  const caches = layerCaches(m, capacity, options)
  const s: Session = { caches, capacity, length: 0, table: undefined, gpuTable: undefined, closed: false }
  return {
    get length() {
      return s.length
    },
    capacity,
    get table() {
      return s.table
    },
    feed: (tokens, t, o = {}) => feed(m, s, tokens, t, o),
    rerotate: (t) => rerotate(m, s, t),
    reset() {
      checkSession(m, s)
      s.length = 0
    },
    dispose() {
      if (s.closed) return
      s.closed = true
      if (m.disposed) return
      rt.flush()
      for (const cache of caches) releaseKvCache(rt, cache)
      if (s.gpuTable !== undefined) releaseRopeTable(rt, s.gpuTable)
    },
  }
}

function checkSession(m: DeviceLlama, s: Session): void {
  if (s.closed) throw new Error("llama session: used after dispose()")
  checkAlive(m)
}

function setSessionTable(m: DeviceLlama, s: Session, t: RopeTable): GpuRopeTable {
  if (s.gpuTable !== undefined) releaseRopeTable(m.rt, s.gpuTable)
  s.table = t
  s.gpuTable = uploadRopeTable(m.rt, t, m.c.numLayers)
  return s.gpuTable
}

/** LlamaSession.feed: `tokens` through the model at positions length.., chunk by chunk; ln p(next token) after the last. */
async function feed(m: DeviceLlama, s: Session, tokens: Uint32Array | readonly number[], t: RopeTable, options: { readonly chunk?: number; readonly source?: string }): Promise<Float64Array> {
  checkSession(m, s)
  const { rt, c } = m
  const n = tokens.length
  if (n === 0) throw new Error("llama session: feed needs at least one token")
  checkTokens(tokens, c.vocabSize, options.source)
  if (s.length + n > s.capacity) throw new Error(`llama session: ${s.length} cached + ${n} new tokens exceed the capacity ${s.capacity}`)
  if (c.slidingWindow !== undefined && s.length + n > c.slidingWindow) {
    throw inputError(c.file, `sliding_window ${c.slidingWindow} is shorter than the ${s.length + n}-token sequence; sliding-window attention is not implemented (set sliding_window to null for full attention)`)
  }
  let gt = s.gpuTable
  if (s.table === undefined || gt === undefined || !sameRopeTable(s.table, t, c.numLayers)) {
    if (s.length > 0) throw new Error("llama session: the table differs from the one the cached keys carry; rerotate() or reset() first")
    gt = setSessionTable(m, s, t)
  }
  const chunk = Math.max(1, Math.floor(options.chunk ?? DEFAULT_CHUNK))
  const ids = Uint32Array.from(tokens)
  let last: Tensor | undefined
  for (let at = 0; at < n; at += chunk) {
    const len = Math.min(chunk, n - at)
    const x = forwardChunk(m, ids.subarray(at, at + len), s.length + at, gt, s.caches)
    if (at + len < n) rt.release(x)
    else {
      last = len === 1 ? x : sliceRows(rt, x, len - 1, 1, c.hiddenSize)
      if (last !== x) rt.release(x)
    }
  }
  s.length += n
  const logits = linear(rt, last!, m.lmHead)
  rt.release(last)
  const values = await rt.read(logits)
  rt.release(logits)
  return logSoftmax(values, c.vocabSize)
}

/** LlamaSession.rerotate: the cached keys turned from the old table to `t`. */
function rerotate(m: DeviceLlama, s: Session, t: RopeTable): void {
  checkSession(m, s)
  const { rt, c } = m
  if (s.table !== undefined && sameRopeTable(s.table, t, c.numLayers)) return
  const old = s.gpuTable
  if (old === undefined || s.length === 0) {
    setSessionTable(m, s, t) // nothing cached to turn
    return
  }
  // The inverse table rotates by −angle but keeps m; 1/m_old instead undoes the old scale too. Rows
  // below the old n̂ were rotated with θ_0 and no scale, which the inverse undoes as they are.
  const inv0 = inverseRopeTable(rt, old)
  const inverse: GpuRopeTable = { ...inv0, attentionScale: 1 / old.attentionScale }
  const fresh = uploadRopeTable(rt, t, c.numLayers)
  turnCachedKeys(m, s, inverse, fresh)
  rt.releaseBuffer(inv0.buffer)
  releaseRopeTable(rt, old)
  s.table = t
  s.gpuTable = fresh
}

/**
 * Every cached key rotated by `inverse`, then by `fresh`, page by page (each within one storage binding):
 * an f32 page turned in place, a 16-bit one widened, turned and rounded back.
 */
function turnCachedKeys(m: DeviceLlama, s: Session, inverse: GpuRopeTable, fresh: GpuRopeTable): void {
  const { rt, c } = m
  const width = c.numKvHeads * c.headDim
  const opts = { heads: c.numKvHeads, headDim: c.headDim }
  const pageRows = s.caches[0]!.pageRows
  const scratch = kvScratch(rt, s.caches[0]!)
  for (let from = 0, p = 0; from < s.length; from += pageRows, p++) {
    const rows = Math.min(pageRows, s.length - from)
    const positions = new Uint32Array(rows)
    for (let i = 0; i < rows; i++) positions[i] = from + i
    const posT = rt.upload(positions)
    for (let l = 0; l < s.caches.length; l++) {
      const cache = s.caches[l]!
      const page = cache.pages[p]!.k
      const view: Tensor = { buffer: kvRows(rt, cache, page, rows, scratch).buffer, shape: [rows, width], dtype: "f32" }
      applyRope(rt, view, posT, inverse, { ...opts, layer: l })
      applyRope(rt, view, posT, fresh, { ...opts, layer: l })
      storeKvRows(rt, cache, page, rows, scratch)
    }
    rt.release(posT)
  }
  rt.release(scratch)
}

/** ln softmax of the row at `offset` of `logits` into the same place of `out`, in float64. */
function logSoftmaxInto(logits: Float32Array, offset: number, vocab: number, out: Float64Array): void {
  let max = -Infinity
  for (let i = 0; i < vocab; i++) if (logits[offset + i]! > max) max = logits[offset + i]!
  let sum = 0
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[offset + i]! - max)
  const lse = max + Math.log(sum)
  for (let i = 0; i < vocab; i++) out[offset + i] = logits[offset + i]! - lse
}

/** ln softmax of one row of logits, in float64 (the host picks the next token from it anyway). */
function logSoftmax(logits: Float32Array, vocab: number): Float64Array {
  const out = new Float64Array(vocab)
  logSoftmaxInto(logits, 0, vocab, out)
  return out
}
