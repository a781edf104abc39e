/**
 * The llama-family forward on WGSL kernels, for next-token log-probabilities under a RoPE table.
 *
 * Long inputs go through in chunks: each chunk's keys/values are appended to a per-layer KV cache and its
 * queries attend to everything before them, so memory is O(T·d) (cache) + O(chunk·(d + V)), never T² or
 * T·V. Semantics are transformers' (rotate_half RoPE, GQA, RMSNorm, SwiGLU, tied head).
 */
import { type KvCache, appendKv, attention, createKvCache, releaseKvCache } from "../../../kernels/attention.ts"
import { embed } from "../../../kernels/embedding.ts"
import { logprobsFromLogits } from "../../../kernels/logprobs.ts"
import { type Weight, linear, prepareWeight, releaseWeight } from "../../../kernels/matmul.ts"
import { rmsnorm } from "../../../kernels/rmsnorm.ts"
import { type GpuRopeTable, applyRope, releaseRopeTable, uploadRopeTable } from "../../../kernels/rope.ts"
import type { RopeTable } from "../../../kernels/rope-table.ts"
import type { GpuRuntime } from "../../../kernels/runtime.ts"
import { swiglu } from "../../../kernels/swiglu.ts"
import type { Tensor } from "../../../kernels/tensor.ts"
import { inputError } from "../../../pipeline/errors.ts"
import { type ChosenTable, resolveRope } from "../../rope/index.ts"
import { Checkpoint } from "../safetensors.ts"
import { type ConfigOptions, type LlamaConfig, readLlamaConfig } from "./config.ts"
import { readLayer, validateCheckpoint } from "./weights.ts"

export const DEFAULT_CHUNK = 512
/** Logit rows per lm_head matmul are capped so that rows × vocab stays under this many floats (64 MiB). */
const LOGIT_FLOATS = 16 * 1024 * 1024

/** A model folder checked without touching the GPU: config, tensor headers and the RoPE method. */
export interface InspectedLlama {
  readonly config: LlamaConfig
  readonly checkpoint: Checkpoint
  /** The RoPE table for an input length (resolved from config.json's rope_scaling or the override). */
  readonly rope: (length: number) => ChosenTable
}

export interface InspectOptions extends ConfigOptions {
  /** What RoPE errors name (e.g. "--rope-scaling" when the scaling came from the command line). */
  readonly ropeSource?: string
}

/** Reads config.json, opens the checkpoint and validates every tensor's name, dtype and shape. */
export function inspectLlama(dir: string, options: InspectOptions = {}): InspectedLlama {
  const config = readLlamaConfig(dir, options)
  const rope = options.ropeSource === undefined ? resolveRope(config.rope) : resolveRope(config.rope, options.ropeSource)
  const checkpoint = Checkpoint.open(dir)
  validateCheckpoint(config, checkpoint)
  return { config, checkpoint, rope }
}

export interface LogprobsOptions {
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
    for (const w of weights.splice(0)) releaseWeight(rt, w)
  }
  const up = (data: Float32Array, shape?: readonly number[]): Tensor => {
    const t = rt.upload(data, shape)
    tensors.push(t)
    return t
  }
  const bias = (b: Float32Array | undefined): Tensor | undefined => (b === undefined ? undefined : up(b))
  const weight = (data: Float32Array, n: number, k: number): Weight => {
    const w = prepareWeight(rt, data, n, k)
    weights.push(w)
    return w
  }

  let embedTable: Tensor, lmHead: Weight, finalNorm: Tensor
  const layers: GpuLayer[] = []
  try {
    const embedData = checkpoint.read("model.embed_tokens.weight")
    embedTable = up(embedData, [c.vocabSize, D])
    lmHead = weight(c.tieWordEmbeddings ? embedData : checkpoint.read("lm_head.weight"), c.vocabSize, D)
    finalNorm = up(checkpoint.read("model.norm.weight"))
    // One layer on the host at a time, so host memory stays at one layer's size.
    for (let i = 0; i < c.numLayers; i++) {
      const h = readLayer(c, checkpoint, i)
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
    }
    await rt.sync()
  } catch (e) {
    releaseAll()
    throw e
  }

  let disposed = false

  const lin = (x: Tensor, w: Weight, b: Tensor | undefined): Tensor => (b === undefined ? linear(rt, x, w) : linear(rt, x, w, { bias: b }))

  /** x += x_in·Wᵀ (+ b): the residual update, in place. */
  const linAdd = (x: Tensor, w: Weight, b: Tensor | undefined, residual: Tensor): void => {
    if (b === undefined) linear(rt, x, w, { addTo: residual })
    else linear(rt, x, w, { bias: b, addTo: residual })
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
    const caches: KvCache[] = layers.map(() => createKvCache(rt, m, c.numKvHeads, c.headDim))
    const logitRows = Math.max(1, Math.min(chunk, Math.floor(options.logitRows ?? LOGIT_FLOATS / c.vocabSize)))
    try {
      for (let start = 0; start < m; start += chunk) {
        const len = Math.min(chunk, m - start)
        const x = forwardChunk(ids, start, len, table, caches)
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
    return out
  }

  /** One chunk through every layer and the final norm; returns the normed hidden states [len, D]. */
  function forwardChunk(ids: Uint32Array, start: number, len: number, table: GpuRopeTable, caches: readonly KvCache[]): Tensor {
    const idT = rt.upload(ids.subarray(start, start + len))
    const positions = new Uint32Array(len)
    for (let i = 0; i < len; i++) positions[i] = start + i
    const posT = rt.upload(positions)
    const x = embed(rt, embedTable, idT)

    for (let l = 0; l < layers.length; l++) {
      const w = layers[l]!
      const h = rmsnorm(rt, x, w.inputNorm, c.rmsNormEps)
      const q = lin(h, w.q, w.qBias)
      const k = lin(h, w.k, w.kBias)
      const v = lin(h, w.v, w.vBias)
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
      const g = lin(h2, w.gate, w.gateBias)
      const u = lin(h2, w.up, w.upBias)
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

  return {
    config: c,
    rope: inspected.rope,
    logprobs,
    dispose() {
      if (disposed) return
      disposed = true
      releaseAll()
    },
  }
}
