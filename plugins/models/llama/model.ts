/**
 * The llama-family forward on WGSL kernels, for next-token log-probabilities under a RoPE table.
 *
 * Long inputs go through in chunks: each chunk's keys/values are appended to a per-layer KV cache and its
 * queries attend to everything before them, so memory is O(T·d) (cache) + O(chunk·(d + V)), never T² or
 * T·V. Semantics are transformers' (rotate_half RoPE, GQA, RMSNorm, SwiGLU, tied head).
 */
import { type KvCache, type KvCacheOptions, appendKv, attention, createKvCache, kvRows, kvScratch, releaseKvCache, storeKvRows } from "../../../kernels/attention.ts"
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
import { readRawLayer, validateCheckpoint } from "./weights.ts"

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
  /** Rows per cache page (a multiple of 4; default: as many as one storage binding holds). Tests force small pages. */
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

/** Loads a folder (or an already inspected one) onto the GPU. */
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

export async function loadLlama(rt: GpuRuntime, source: string | InspectedLlama, options: InspectOptions = {}): Promise<LlamaModel> {
  const inspected = typeof source === "string" ? inspectLlama(source, options) : source
  const { config: c, checkpoint } = inspected
  const D = c.hiddenSize
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  const I = c.intermediateSize
  // Everything uploaded is recorded, so a failed load and dispose() free exactly what exists.
  const tensors: Tensor[] = []
  const weights: Weight[] = []
  const releaseAll = (): void => {
    rt.flush()
    rt.release(...tensors.splice(0))
    for (const h of halves.splice(0)) rt.releaseBuffer(h.buffer)
    for (const w of weights.splice(0)) releaseWeight(rt, w)
  }
  const halves: HalfTensor[] = []
  const up = (raw: RawTensor, shape?: readonly number[]): Tensor => {
    const t = rt.upload(rawToF32(raw), shape)
    tensors.push(t)
    return t
  }
  const bias = (b: RawTensor | undefined): Tensor | undefined => (b === undefined ? undefined : up(b))
  // in the file's dtype: 16-bit weights stay 16-bit on the device
  const weight = (raw: RawTensor, n: number, k: number): Weight => {
    const w = raw.dtype === "F32" ? prepareWeight(rt, raw.data, n, k) : prepareWeight16(rt, raw.data, HALF[raw.dtype], n, k)
    weights.push(w)
    return w
  }
  const table = (raw: RawTensor): Tensor | HalfTensor => {
    if (raw.dtype === "F32") return up(raw, [c.vocabSize, D])
    const h = uploadHalf(rt, raw.data, [c.vocabSize, D], HALF[raw.dtype])
    halves.push(h)
    return h
  }

  // the cache keeps the weights' precision unless asked otherwise
  const kvDtype: "f32" | Half = [...checkpoint.tensors.values()].some((t) => t.dtype === "BF16") ? "bf16" : [...checkpoint.tensors.values()].some((t) => t.dtype === "F16") ? "f16" : "f32"
  const kvOptions = (o: KvOptions, capacity: number): KvCacheOptions => ({
    dtype: o.kvCache ?? kvDtype,
    ...(o.pageRows === undefined ? {} : { pageRows: Math.min(o.pageRows, Math.ceil(capacity / 4) * 4) }),
  })
  let embedLookup: (ids: Tensor) => Tensor, lmHead: Weight, finalNorm: Tensor
  const layers: GpuLayer[] = []
  try {
    {
      const embedRaw = checkpoint.readRaw("model.embed_tokens.weight")
      if (c.tieWordEmbeddings) {
        // one copy on the device: the head's prepared weight holds the table's values, and the lookup reads them there
        const head = weight(embedRaw, c.vocabSize, D)
        lmHead = head
        embedLookup = (ids) => embedFromWeight(rt, head, ids)
      } else {
        const embedTable = table(embedRaw)
        embedLookup = (ids) => embed(rt, embedTable, ids)
        lmHead = weight(checkpoint.readRaw("lm_head.weight"), c.vocabSize, D)
      }
    }
    await settle(rt)
    finalNorm = up(checkpoint.readRaw("model.norm.weight"))
    // One layer on the host at a time, in its file dtype, so host memory stays at one layer's size.
    for (let i = 0; i < c.numLayers; i++) {
      const h = readRawLayer(c, checkpoint, i)
      layers.push({
        inputNorm: up(h.inputNorm),
        q: weight(h.q, qDim, D),
        k: weight(h.k, kvDim, D),
        v: weight(h.v, kvDim, D),
        o: weight(h.o, D, qDim),
        qBias: bias(h.qBias),
        kBias: bias(h.kBias),
        vBias: bias(h.vBias),
        oBias: bias(h.oBias),
        postNorm: up(h.postNorm),
        gate: weight(h.gate, I, D),
        up: weight(h.up, I, D),
        down: weight(h.down, D, I),
        gateBias: bias(h.gateBias),
        upBias: bias(h.upBias),
        downBias: bias(h.downBias),
      })
      await settle(rt)
    }
  } catch (e) {
    releaseAll()
    throw e
  }

  let disposed = false

  /** x += x_in·Wᵀ (+ b): the residual update, in place. */
  const linAdd = (x: Tensor, w: Weight, b: Tensor | undefined, residual: Tensor): void => {
    linearMany(rt, x, [{ w, bias: b, addTo: residual }])
  }

  async function logprobs(tokens: Uint32Array | readonly number[], options: LogprobsOptions = {}): Promise<Float64Array> {
    if (disposed) throw new Error("llama: model used after dispose()")
    const n = tokens.length
    checkSequence(c, tokens, options.source)
    const out = new Float64Array(Math.max(0, n - 1))
    if (n < 2) return out
    const chunk = Math.max(1, Math.floor(options.chunk ?? DEFAULT_CHUNK))
    const ids = Uint32Array.from(tokens)
    // The last token is only a target: nothing attends to it and its prediction is not scored, so only
    // positions 0..n-2 go through the model. The table is still the one for length n (HF semantics).
    const m = n - 1
    const table = uploadRopeTable(rt, options.rope ?? inspected.rope(n), c.numLayers)
    const caches: KvCache[] = layers.map(() => createKvCache(rt, m, c.numKvHeads, c.headDim, kvOptions(options, m)))
    const logitRows = Math.max(1, Math.min(chunk, Math.floor(options.logitRows ?? LOGIT_FLOATS / c.vocabSize)))
    try {
      for (let start = 0; start < m; start += chunk) {
        const len = Math.min(chunk, m - start)
        const x = forwardChunk(ids.subarray(start, start + len), start, table, caches)
        // Row p predicts token p+1.
        for (let r = 0; r < len; r += logitRows) {
          const rows = Math.min(logitRows, len - r)
          const part = rows === len ? x : sliceRows(x, r, rows, D)
          const logits = linear(rt, part, lmHead)
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

  async function distributions(tokens: Uint32Array | readonly number[], tables: readonly RopeTable[], onRows: DistributionRows, options: DistributionOptions = {}): Promise<void> {
    if (disposed) throw new Error("llama: model used after dispose()")
    if (tables.length === 0) throw new Error("llama distributions: at least one table")
    const n = tokens.length
    checkSequence(c, tokens, options.source)
    if (n < 2) return
    const chunk = Math.max(1, Math.floor(options.chunk ?? DEFAULT_CHUNK))
    const ids = Uint32Array.from(tokens)
    const m = n - 1
    const V = c.vocabSize
    const logitRows = Math.max(1, Math.min(chunk, Math.floor(options.logitRows ?? LOGIT_FLOATS / (V * tables.length))))
    // one KV cache per table: the tables advance through the sequence in lockstep, chunk by chunk
    const gpuTables: GpuRopeTable[] = []
    const caches: KvCache[][] = []
    try {
      for (const t of tables) {
        gpuTables.push(uploadRopeTable(rt, t, c.numLayers))
        caches.push(layers.map(() => createKvCache(rt, m, c.numKvHeads, c.headDim, kvOptions(options, m))))
      }
      for (let start = 0; start < m; start += chunk) {
        const len = Math.min(chunk, m - start)
        const hidden = gpuTables.map((t, k) => forwardChunk(ids.subarray(start, start + len), start, t, caches[k]!))
        try {
          for (let r = 0; r < len; r += logitRows) {
            const rows = Math.min(logitRows, len - r)
            const blocks: Float64Array[] = []
            for (const x of hidden) {
              const part = rows === len ? x : sliceRows(x, r, rows, D)
              const logits = linear(rt, part, lmHead)
              if (part !== x) rt.release(part)
              const values = await rt.read(logits)
              rt.release(logits)
              const out = new Float64Array(rows * V)
              for (let j = 0; j < rows; j++) logSoftmaxInto(values, j * V, V, out)
              blocks.push(out)
            }
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

  /** One chunk (`ids`, at positions start..) through every layer and the final norm; returns the normed hidden states [len, D]. */
  function forwardChunk(ids: Uint32Array, start: number, table: GpuRopeTable, caches: readonly KvCache[]): Tensor {
    const len = ids.length
    const idT = rt.upload(ids)
    const positions = new Uint32Array(len)
    for (let i = 0; i < len; i++) positions[i] = start + i
    const posT = rt.upload(positions)
    const x = embedLookup(idT)

    for (let l = 0; l < layers.length; l++) {
      const w = layers[l]!
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
      linAdd(a, w.o, w.oBias, x)
      rt.release(a)
      const h2 = rmsnorm(rt, x, w.postNorm, c.rmsNormEps)
      const [g, u] = linearMany(rt, h2, [{ w: w.gate, bias: w.gateBias }, { w: w.up, bias: w.upBias }]) as [Tensor, Tensor]
      rt.release(h2)
      const m = swiglu(rt, g, u)
      rt.release(g, u)
      linAdd(m, w.down, w.downBias, x)
      rt.release(m)
    }
    const normed = rmsnorm(rt, x, finalNorm, c.rmsNormEps)
    rt.release(x, idT, posT)
    return normed
  }

  /** Rows [from, from+rows) of x [*, width] as a new tensor (a recorded copy, in batch order). */
  function sliceRows(x: Tensor, from: number, rows: number, width: number): Tensor {
    const t = rt.tensor([rows, width])
    rt.copy(x.buffer, from * width * 4, t.buffer, 0, rows * width * 4)
    return t
  }

  function session(capacity: number, options: KvOptions = {}): LlamaSession {
    if (disposed) throw new Error("llama: model used after dispose()")
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`llama session: capacity ${capacity} must be an integer ≥ 1`)
    const caches: KvCache[] = []
    try {
      for (let l = 0; l < layers.length; l++) caches.push(createKvCache(rt, capacity, c.numKvHeads, c.headDim, kvOptions(options, capacity)))
    } catch (e) {
      for (const cache of caches) releaseKvCache(rt, cache)
      throw e
    }
    let length = 0
    let table: RopeTable | undefined
    let gpuTable: GpuRopeTable | undefined
    let closed = false
    const setTable = (t: RopeTable): GpuRopeTable => {
      if (gpuTable !== undefined) releaseRopeTable(rt, gpuTable)
      table = t
      gpuTable = uploadRopeTable(rt, t, c.numLayers)
      return gpuTable
    }
    const alive = (): void => {
      if (closed) throw new Error("llama session: used after dispose()")
      if (disposed) throw new Error("llama: model used after dispose()")
    }

    async function feed(tokens: Uint32Array | readonly number[], t: RopeTable, options: { readonly chunk?: number; readonly source?: string } = {}): Promise<Float64Array> {
      alive()
      const n = tokens.length
      if (n === 0) throw new Error("llama session: feed needs at least one token")
      checkTokens(tokens, c.vocabSize, options.source)
      if (length + n > capacity) throw new Error(`llama session: ${length} cached + ${n} new tokens exceed the capacity ${capacity}`)
      if (c.slidingWindow !== undefined && length + n > c.slidingWindow) {
        throw inputError(c.file, `sliding_window ${c.slidingWindow} is shorter than the ${length + n}-token sequence; sliding-window attention is not implemented (set sliding_window to null for full attention)`)
      }
      let gt = gpuTable
      if (table === undefined || gt === undefined || !sameRopeTable(table, t, c.numLayers)) {
        if (length > 0) throw new Error("llama session: the table differs from the one the cached keys carry; rerotate() or reset() first")
        gt = setTable(t)
      }
      const chunk = Math.max(1, Math.floor(options.chunk ?? DEFAULT_CHUNK))
      const ids = Uint32Array.from(tokens)
      let last: Tensor | undefined
      for (let at = 0; at < n; at += chunk) {
        const len = Math.min(chunk, n - at)
        const x = forwardChunk(ids.subarray(at, at + len), length + at, gt, caches)
        if (at + len < n) rt.release(x)
        else {
          last = len === 1 ? x : sliceRows(x, len - 1, 1, D)
          if (last !== x) rt.release(x)
        }
      }
      length += n
      const logits = linear(rt, last!, lmHead)
      rt.release(last)
      const values = await rt.read(logits)
      rt.release(logits)
      return logSoftmax(values, c.vocabSize)
    }

    function rerotate(t: RopeTable): void {
      alive()
      if (table !== undefined && sameRopeTable(table, t, c.numLayers)) return
      const old = gpuTable
      if (old === undefined || length === 0) {
        setTable(t) // nothing cached to turn
        return
      }
      // The inverse table rotates by −angle but keeps m; 1/m_old instead undoes the old scale too. Rows
      // below the old n̂ were rotated with θ_0 and no scale, which the inverse undoes as they are.
      const inv0 = inverseRopeTable(rt, old)
      const inverse: GpuRopeTable = { ...inv0, attentionScale: 1 / old.attentionScale }
      const fresh = uploadRopeTable(rt, t, c.numLayers)
      const width = c.numKvHeads * c.headDim
      const opts = { heads: c.numKvHeads, headDim: c.headDim }
      // page by page (each within one storage binding): an f32 page turned in place, a 16-bit one widened,
      // turned and rounded back
      const pageRows = caches[0]!.pageRows
      const scratch = kvScratch(rt, caches[0]!)
      for (let from = 0, p = 0; from < length; from += pageRows, p++) {
        const rows = Math.min(pageRows, length - from)
        const positions = new Uint32Array(rows)
        for (let i = 0; i < rows; i++) positions[i] = from + i
        const posT = rt.upload(positions)
        for (let l = 0; l < caches.length; l++) {
          const cache = caches[l]!
          const page = cache.pages[p]!.k
          const view: Tensor = { buffer: kvRows(rt, cache, page, rows, scratch).buffer, shape: [rows, width], dtype: "f32" }
          applyRope(rt, view, posT, inverse, { ...opts, layer: l })
          applyRope(rt, view, posT, fresh, { ...opts, layer: l })
          storeKvRows(rt, cache, page, rows, scratch)
        }
        rt.release(posT)
      }
      rt.release(scratch)
      rt.releaseBuffer(inv0.buffer)
      releaseRopeTable(rt, old)
      table = t
      gpuTable = fresh
    }

    return {
      get length() {
        return length
      },
      capacity,
      get table() {
        return table
      },
      feed,
      rerotate,
      reset() {
        alive()
        length = 0
      },
      dispose() {
        if (closed) return
        closed = true
        if (disposed) return
        rt.flush()
        for (const cache of caches) releaseKvCache(rt, cache)
        if (gpuTable !== undefined) releaseRopeTable(rt, gpuTable)
      },
    }
  }

  return {
    config: c,
    rope: inspected.rope,
    kvDtype,
    logprobs,
    session,
    distributions,
    dispose() {
      if (disposed) return
      disposed = true
      releaseAll()
    },
  }
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
  let max = -Infinity
  for (let i = 0; i < vocab; i++) if (logits[i]! > max) max = logits[i]!
  let sum = 0
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[i]! - max)
  const lse = max + Math.log(sum)
  const out = new Float64Array(vocab)
  for (let i = 0; i < vocab; i++) out[i] = logits[i]! - lse
  return out
}
