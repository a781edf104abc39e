/**
 * Float64 reference of the GPT-NeoX forward (transformers' GPTNeoXForCausalLM, eval mode): every token,
 * plain loops, full causal attention. For the family's test, on small random models.
 */
import { type Checkpoint, geluRef, layernormRef, type RopeTable, ropeRef } from "../../../plugins/api.ts"
import type { NeoxConfig } from "./config.ts"
import { readNeoxLayer } from "./weights.ts"

/** y[t] = x[t]·Wᵀ + b for x [T, k], W [n, k]. */
function affine(x: Float64Array, T: number, k: number, w: Float32Array, b: Float32Array, n: number): Float64Array {
  const y = new Float64Array(T * n)
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < n; j++) {
      let s = b[j]!
      for (let i = 0; i < k; i++) s += x[t * k + i]! * w[j * k + i]!
      y[t * n + j] = s
    }
  }
  return y
}

/** Causal softmax attention per head, scale 1/√headDim; q, k, v [T, heads·headDim]. */
function attend(q: Float64Array, k: Float64Array, v: Float64Array, T: number, heads: number, hd: number): Float64Array {
  const D = heads * hd
  const out = new Float64Array(T * D)
  for (let h = 0; h < heads; h++) {
    for (let t = 0; t < T; t++) {
      const s = new Float64Array(t + 1)
      let max = -Infinity
      for (let u = 0; u <= t; u++) {
        let dot = 0
        for (let d = 0; d < hd; d++) dot += q[t * D + h * hd + d]! * k[u * D + h * hd + d]!
        s[u] = dot / Math.sqrt(hd)
        max = Math.max(max, s[u]!)
      }
      let z = 0
      for (let u = 0; u <= t; u++) z += (s[u] = Math.exp(s[u]! - max))
      for (let u = 0; u <= t; u++) for (let d = 0; d < hd; d++) out[t * D + h * hd + d] = out[t * D + h * hd + d]! + (s[u]! / z) * v[u * D + h * hd + d]!
    }
  }
  return out
}

const add = (a: Float64Array, b: Float64Array): Float64Array => Float64Array.from(a, (x, i) => x + b[i]!)

/** ln p(tokens[i+1] | tokens[0..i]) for i < T − 1, under `table`, in float64. */
export function neoxLogprobsRef(c: NeoxConfig, ckpt: Checkpoint, tokens: readonly number[], table: RopeTable): Float64Array {
  const T = tokens.length, D = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize, eps = c.layerNormEps
  const emb = ckpt.read("gpt_neox.embed_in.weight")
  let x: Float64Array = new Float64Array(T * D)
  tokens.forEach((id, t) => { for (let d = 0; d < D; d++) x[t * D + d] = emb[id * D + d]! })
  const positions = tokens.map((_, t) => t)
  for (let l = 0; l < c.numLayers; l++) {
    const w = readNeoxLayer(c, ckpt, l)
    const h1 = layernormRef(x, w.ln1.w, w.ln1.b, D, eps)
    const rot = (y: Float64Array) => ropeRef(y, positions, table, { heads: c.numHeads, headDim: c.headDim, layer: l })
    const q = rot(affine(h1, T, D, w.q, w.qBias, D)), k = rot(affine(h1, T, D, w.k, w.kBias, D)), v = affine(h1, T, D, w.v, w.vBias, D)
    const attn = affine(attend(q, k, v, T, c.numHeads, c.headDim), T, D, w.o, w.oBias, D)
    const mlpIn = c.parallelResidual ? layernormRef(x, w.ln2.w, w.ln2.b, D, eps) : layernormRef(add(x, attn), w.ln2.w, w.ln2.b, D, eps)
    const mlp = affine(geluRef(affine(mlpIn, T, D, w.up, w.upBias, I)), T, I, w.down, w.downBias, D)
    x = add(add(x, attn), mlp)
  }
  const h = layernormRef(x, ckpt.read("gpt_neox.final_layer_norm.weight"), ckpt.read("gpt_neox.final_layer_norm.bias"), D, eps)
  const head = ckpt.read("embed_out.weight")
  const out = new Float64Array(T - 1)
  for (let t = 0; t < T - 1; t++) {
    const logits = affine(h.subarray(t * D, (t + 1) * D), 1, D, head, new Float32Array(V), V)
    const max = logits.reduce((a, b) => Math.max(a, b), -Infinity)
    const lse = max + Math.log(logits.reduce((a, b) => a + Math.exp(b - max), 0))
    out[t] = logits[tokens[t + 1]!]! - lse
  }
  return out
}
