/**
 * The GPT-NeoX forward on ropeway's kernels: LayerNorm with bias, q/k/v with biases, rotary on the first
 * 25% of each head (rotate_half pairing, as NeoX), causal attention over a per-layer KV cache, a GELU MLP,
 * and Pythia's parallel residual x + attn(ln1(x)) + mlp(ln2(x)). Long inputs go through in chunks, so
 * memory is linear in length.
 */
import {
  appendKv, attention, createKvCache, type DecodeSession, embed, gelu, type GpuRopeTable, type GpuRuntime, type KvCache, layernorm, linear,
  type LoadedModel, type LogprobsOptions, logprobsFromLogits, prepareWeight, releaseKvCache, releaseRopeTable, releaseWeight, type RopeTable,
  sameRopeTable, type Tensor, uploadRopeTable, type Weight, applyRope,
} from "../../../plugins/api.ts"
import type { NeoxConfig } from "./config.ts"
import type { InspectedNeox } from "./family.ts"
import { readNeoxLayer } from "./weights.ts"

export const DEFAULT_CHUNK = 512
/** Logit floats per forward chunk (chunk × vocab) are capped at this: 64 MiB. */
export const LOGIT_FLOATS = 16 * 1024 * 1024

/** Tokens per forward chunk: the one asked for, fewer when its logits would pass LOGIT_FLOATS. */
export const chunkFor = (c: NeoxConfig, asked: number | undefined): number =>
  Math.max(1, Math.min(Math.floor(asked ?? DEFAULT_CHUNK), Math.floor(LOGIT_FLOATS / c.vocabSize)))

interface Norm {
  readonly w: Tensor
  readonly b: Tensor
}

interface GpuLayer {
  readonly ln1: Norm
  readonly ln2: Norm
  readonly q: Weight
  readonly k: Weight
  readonly v: Weight
  readonly o: Weight
  readonly up: Weight
  readonly down: Weight
  readonly qBias: Tensor
  readonly kBias: Tensor
  readonly vBias: Tensor
  readonly oBias: Tensor
  readonly upBias: Tensor
  readonly downBias: Tensor
}

/** Everything on the device, recorded so a failed load and dispose() free exactly what exists. */
class Weights {
  readonly tensors: Tensor[] = []
  readonly weights: Weight[] = []
  constructor(private readonly rt: GpuRuntime) {}
  up(data: Float32Array, shape?: readonly number[]): Tensor {
    const t = this.rt.upload(data, shape)
    this.tensors.push(t)
    return t
  }
  weight(data: Float32Array, n: number, k: number): Weight {
    const w = prepareWeight(this.rt, data, n, k)
    this.weights.push(w)
    return w
  }
  release(): void {
    this.rt.flush()
    this.rt.release(...this.tensors.splice(0))
    for (const w of this.weights.splice(0)) releaseWeight(this.rt, w)
  }
}

function uploadLayers(c: NeoxConfig, m: InspectedNeox, w: Weights): GpuLayer[] {
  const D = c.hiddenSize, I = c.intermediateSize
  const layers: GpuLayer[] = []
  // One layer on the host at a time.
  for (let l = 0; l < c.numLayers; l++) {
    const h = readNeoxLayer(c, m.checkpoint, l)
    layers.push({
      ln1: { w: w.up(h.ln1.w), b: w.up(h.ln1.b) }, ln2: { w: w.up(h.ln2.w), b: w.up(h.ln2.b) },
      q: w.weight(h.q, D, D), k: w.weight(h.k, D, D), v: w.weight(h.v, D, D), o: w.weight(h.o, D, D),
      up: w.weight(h.up, I, D), down: w.weight(h.down, D, I),
      qBias: w.up(h.qBias), kBias: w.up(h.kBias), vBias: w.up(h.vBias), oBias: w.up(h.oBias), upBias: w.up(h.upBias), downBias: w.up(h.downBias),
    })
  }
  return layers
}

/** The forward of one chunk of tokens at positions start.., through every layer and the final norm. */
type Forward = (ids: Uint32Array, start: number, table: GpuRopeTable, caches: readonly KvCache[]) => Tensor

function forward(rt: GpuRuntime, c: NeoxConfig, g: { embedIn: Tensor; layers: GpuLayer[]; final: Norm }): Forward {
  return (ids: Uint32Array, start: number, table: GpuRopeTable, caches: readonly KvCache[]): Tensor => {
    const len = ids.length
    const idT = rt.upload(ids)
    const posT = rt.upload(Uint32Array.from({ length: len }, (_, i) => start + i))
    const x = embed(rt, g.embedIn, idT)
    const heads = c.numHeads, headDim = c.headDim, eps = c.layerNormEps
    g.layers.forEach((w, l) => {
      const h1 = layernorm(rt, x, w.ln1.w, w.ln1.b, eps)
      const q = linear(rt, h1, w.q, { bias: w.qBias }), k = linear(rt, h1, w.k, { bias: w.kBias }), v = linear(rt, h1, w.v, { bias: w.vBias })
      rt.release(h1)
      applyRope(rt, q, posT, table, { heads, headDim, layer: l })
      applyRope(rt, k, posT, table, { heads, headDim, layer: l })
      appendKv(rt, caches[l]!, k, v, start)
      rt.release(k, v)
      const a = attention(rt, q, caches[l]!, { heads, queryOffset: start, scale: 1 / Math.sqrt(headDim) })
      rt.release(q)
      // parallel: the MLP reads x before the attention output is added
      const h2 = c.parallelResidual ? layernorm(rt, x, w.ln2.w, w.ln2.b, eps) : undefined
      linear(rt, a, w.o, { bias: w.oBias, addTo: x })
      rt.release(a)
      const m1 = linear(rt, h2 ?? layernorm(rt, x, w.ln2.w, w.ln2.b, eps), w.up, { bias: w.upBias })
      const act = gelu(rt, m1)
      linear(rt, act, w.down, { bias: w.downBias, addTo: x })
      rt.release(m1, act)
    })
    const out = layernorm(rt, x, g.final.w, g.final.b, eps)
    rt.release(x, idT, posT)
    return out
  }
}

const logSoftmax = (logits: Float32Array): Float64Array => {
  let max = -Infinity
  for (const v of logits) if (v > max) max = v
  let sum = 0
  for (const v of logits) sum += Math.exp(v - max)
  const lse = max + Math.log(sum)
  return Float64Array.from(logits, (v) => v - lse)
}

/** A KV-cache session over `cs` (one cache per layer): feed the prompt, then one token at a time. */
class NeoxSession implements DecodeSession {
  length = 0
  table: RopeTable | undefined
  private gpuTable: GpuRopeTable | undefined
  readonly capacity: number

  constructor(
    private readonly rt: GpuRuntime,
    private readonly m: InspectedNeox,
    private readonly run: Forward,
    private readonly cs: KvCache[],
    private readonly logits: (x: Tensor) => Promise<Float32Array>,
  ) {
    this.capacity = cs[0]!.capacity
  }

  async feed(tokens: Uint32Array | readonly number[], t: RopeTable, o: { readonly chunk?: number; readonly source?: string } = {}): Promise<Float64Array> {
    const { rt, m, cs } = this
    const c = m.config
    m.checkSequence(tokens, o.source)
    if (this.length + tokens.length > this.capacity) throw new Error(`neox session: ${this.length} cached + ${tokens.length} new tokens exceed the capacity ${this.capacity}`)
    if (this.table === undefined || !sameRopeTable(this.table, t, c.numLayers)) {
      if (this.length > 0) throw new Error("neox session: the table differs from the one the cached keys carry; reset() first")
      if (this.gpuTable !== undefined) releaseRopeTable(rt, this.gpuTable)
      this.table = t
      this.gpuTable = uploadRopeTable(rt, t, c.numLayers)
    }
    const ids = Uint32Array.from(tokens)
    const chunk = chunkFor(c, o.chunk)
    // all but the last token in chunks, then the last alone: its one row is the next-token logits' input
    for (let at = 0; at < ids.length - 1; at += chunk) rt.release(this.run(ids.subarray(at, Math.min(at + chunk, ids.length - 1)), this.length + at, this.gpuTable!, cs))
    const last = this.run(ids.subarray(ids.length - 1), this.length + ids.length - 1, this.gpuTable!, cs)
    this.length += ids.length
    const values = await this.logits(last)
    rt.release(last)
    return logSoftmax(values)
  }

  reset(): void {
    this.length = 0
  }

  dispose(): void {
    this.rt.flush()
    for (const cache of this.cs) releaseKvCache(this.rt, cache)
    if (this.gpuTable !== undefined) releaseRopeTable(this.rt, this.gpuTable)
  }
}

export async function loadNeox(rt: GpuRuntime, m: InspectedNeox): Promise<LoadedModel> {
  const c = m.config
  const w = new Weights(rt)
  let g: { embedIn: Tensor; layers: GpuLayer[]; final: Norm; head: Weight }
  try {
    g = {
      embedIn: w.up(m.checkpoint.read("gpt_neox.embed_in.weight"), [c.vocabSize, c.hiddenSize]),
      head: w.weight(m.checkpoint.read("embed_out.weight"), c.vocabSize, c.hiddenSize),
      final: { w: w.up(m.checkpoint.read("gpt_neox.final_layer_norm.weight")), b: w.up(m.checkpoint.read("gpt_neox.final_layer_norm.bias")) },
      layers: uploadLayers(c, m, w),
    }
    await rt.sync()
  } catch (e) {
    w.release()
    throw e
  }
  const run = forward(rt, c, g)
  const caches = (capacity: number): KvCache[] => Array.from({ length: c.numLayers }, () => createKvCache(rt, capacity, c.numHeads, c.headDim))
  const logits = async (x: Tensor): Promise<Float32Array> => {
    const l = linear(rt, x, g.head)
    const values = await rt.read(l)
    rt.release(l)
    return values
  }

  async function logprobs(tokens: Uint32Array | readonly number[], o: LogprobsOptions): Promise<Float64Array> {
    m.checkSequence(tokens, o.source)
    const n = tokens.length
    const out = new Float64Array(Math.max(0, n - 1))
    if (n < 2) return out
    const ids = Uint32Array.from(tokens)
    const chunk = chunkFor(c, o.chunk)
    const table = uploadRopeTable(rt, o.rope, c.numLayers)
    const cs = caches(n - 1)
    try {
      for (let start = 0; start < n - 1; start += chunk) {
        const len = Math.min(chunk, n - 1 - start)
        const x = run(ids.subarray(start, start + len), start, table, cs)
        const l = linear(rt, x, g.head)
        const targets = rt.upload(ids.subarray(start + 1, start + 1 + len))
        const lp = logprobsFromLogits(rt, l, targets)
        rt.release(x, l, targets)
        out.set(await rt.read(lp), start)
        rt.release(lp)
      }
    } finally {
      for (const cache of cs) releaseKvCache(rt, cache)
      releaseRopeTable(rt, table)
    }
    return out
  }

  return { config: c, rope: m.rope, logprobs, session: (capacity) => new NeoxSession(rt, m, run, caches(capacity), logits), dispose: () => w.release() }
}
