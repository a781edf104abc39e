/**
 * The llama family's tensors in a Hugging Face checkpoint: which names to expect for a config, checked
 * against the safetensors headers (presence, dtype, shape) before anything is read or uploaded, and read
 * per layer with Phi-3's fused projections split into q/k/v and gate/up.
 */
import { inputError } from "../../../common/errors.ts"
import { FLOAT_DTYPES, type RawTensor, type TensorInfo, type TensorSource, isFloatDType } from "../../../common/safetensors.ts"
import type { LlamaConfig } from "./config.ts"

/** One layer's weights on the host, HF layout ([out, in] for linears), each a T (f32 values, or as stored). */
export interface LayerOf<T> {
  readonly inputNorm: T
  readonly q: T
  readonly k: T
  readonly v: T
  readonly o: T
  readonly qBias: T | undefined
  readonly kBias: T | undefined
  readonly vBias: T | undefined
  readonly oBias: T | undefined
  readonly postNorm: T
  readonly gate: T
  readonly up: T
  readonly down: T
  readonly gateBias: T | undefined
  readonly upBias: T | undefined
  readonly downBias: T | undefined
}

/** A layer as f32 values. */
export type HostLayer = LayerOf<Float32Array>
/** A layer as its file stores it (16-bit weights stay 16-bit). */
export type RawLayer = LayerOf<RawTensor>

export const layerPrefix = (i: number): string => `model.layers.${i}.`

/** Every tensor the config implies, with its expected shape. */
export function expectedTensors(c: LlamaConfig): Map<string, readonly number[]> {
  const D = c.hiddenSize
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  const I = c.intermediateSize
  const m = new Map<string, readonly number[]>()
  m.set("model.embed_tokens.weight", [c.vocabSize, D])
  m.set("model.norm.weight", [D])
  if (!c.tieWordEmbeddings) m.set("lm_head.weight", [c.vocabSize, D])
  for (let i = 0; i < c.numLayers; i++) {
    const p = layerPrefix(i)
    m.set(`${p}input_layernorm.weight`, [D])
    m.set(`${p}post_attention_layernorm.weight`, [D])
    if (c.fused) {
      m.set(`${p}self_attn.qkv_proj.weight`, [qDim + 2 * kvDim, D])
      m.set(`${p}mlp.gate_up_proj.weight`, [2 * I, D])
    } else {
      m.set(`${p}self_attn.q_proj.weight`, [qDim, D])
      m.set(`${p}self_attn.k_proj.weight`, [kvDim, D])
      m.set(`${p}self_attn.v_proj.weight`, [kvDim, D])
      m.set(`${p}mlp.gate_proj.weight`, [I, D])
      m.set(`${p}mlp.up_proj.weight`, [I, D])
    }
    if (c.qkvBias) {
      m.set(`${p}self_attn.q_proj.bias`, [qDim])
      m.set(`${p}self_attn.k_proj.bias`, [kvDim])
      m.set(`${p}self_attn.v_proj.bias`, [kvDim])
    }
    m.set(`${p}self_attn.o_proj.weight`, [D, qDim])
    if (c.oBias) m.set(`${p}self_attn.o_proj.bias`, [D])
    m.set(`${p}mlp.down_proj.weight`, [D, I])
    if (c.mlpBias) {
      m.set(`${p}mlp.gate_proj.bias`, [I])
      m.set(`${p}mlp.up_proj.bias`, [I])
      m.set(`${p}mlp.down_proj.bias`, [D])
    }
  }
  return m
}

/** Checks every expected tensor's presence, dtype and shape from the headers alone (nothing is read). */
export function validateCheckpoint(c: LlamaConfig, ckpt: TensorSource): void {
  // the last layer first: a config claiming absurdly many layers fails here, before listing their tensors
  const last = `${layerPrefix(c.numLayers - 1)}input_layernorm.weight`
  if (ckpt.get(last) === undefined) throw inputError(ckpt.source, `missing tensor "${last}" (config.json says ${c.numLayers} layers)`)
  for (const [name, shape] of expectedTensors(c)) {
    const info = ckpt.get(name)
    if (info === undefined) throw inputError(ckpt.source, `missing tensor "${name}" (expected shape [${shape.join(", ")}])`)
    checkInfo(info, shape)
  }
}

function checkInfo(info: TensorInfo, shape: readonly number[]): void {
  if (!isFloatDType(info.dtype)) {
    throw inputError(info.file, `tensor "${info.name}" has dtype ${info.dtype}; expected one of ${FLOAT_DTYPES.join(", ")}`)
  }
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
    throw inputError(info.file, `tensor "${info.name}" has shape [${info.shape.join(", ")}]; expected [${shape.join(", ")}] from config.json`)
  }
}

/** Reads layer i (after validateCheckpoint) as f32, splitting fused projections the way transformers does. */
export const readLayer = (c: LlamaConfig, ckpt: TensorSource, i: number): HostLayer =>
  layerFrom(c, i, (name) => ckpt.read(name), (t, from, to) => t.slice(from, to))

/** Reads layer i in its file dtype (16-bit stays 16-bit), fused projections split. */
export const readRawLayer = (c: LlamaConfig, ckpt: TensorSource, i: number): RawLayer =>
  layerFrom(c, i, (name) => ckpt.readRaw(name), (t, from, to) => (t.dtype === "F32" ? { dtype: "F32", data: t.data.slice(from, to) } : { dtype: t.dtype, data: t.data.slice(from, to) }))

/** Layer i from f32 tensors by HF name, unfused (q/k/v and gate/up apart, as the trainer's host weights keep them even for Phi-3). */
export const unfusedLayer = (c: LlamaConfig, i: number, read: (name: string) => Float32Array): HostLayer =>
  layerFrom({ ...c, fused: false }, i, read, (t, from, to) => t.slice(from, to))

function layerFrom<T>(c: LlamaConfig, i: number, read: (name: string) => T, slice: (t: T, from: number, to: number) => T): LayerOf<T> {
  const p = layerPrefix(i)
  const D = c.hiddenSize
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  const I = c.intermediateSize
  const opt = (name: string, present: boolean): T | undefined => (present ? read(p + name) : undefined)
  let q: T, k: T, v: T, gate: T, up: T
  if (c.fused) {
    // Phi-3: rows [q | k | v] and [gate | up] (the MLP chunks gate first).
    const qkv = read(`${p}self_attn.qkv_proj.weight`)
    q = slice(qkv, 0, qDim * D)
    k = slice(qkv, qDim * D, (qDim + kvDim) * D)
    v = slice(qkv, (qDim + kvDim) * D, (qDim + 2 * kvDim) * D)
    const gu = read(`${p}mlp.gate_up_proj.weight`)
    gate = slice(gu, 0, I * D)
    up = slice(gu, I * D, 2 * I * D)
  } else {
    q = read(`${p}self_attn.q_proj.weight`)
    k = read(`${p}self_attn.k_proj.weight`)
    v = read(`${p}self_attn.v_proj.weight`)
    gate = read(`${p}mlp.gate_proj.weight`)
    up = read(`${p}mlp.up_proj.weight`)
  }
  return {
    inputNorm: read(`${p}input_layernorm.weight`),
    q,
    k,
    v,
    o: read(`${p}self_attn.o_proj.weight`),
    qBias: opt("self_attn.q_proj.bias", c.qkvBias),
    kBias: opt("self_attn.k_proj.bias", c.qkvBias),
    vBias: opt("self_attn.v_proj.bias", c.qkvBias),
    oBias: opt("self_attn.o_proj.bias", c.oBias),
    postNorm: read(`${p}post_attention_layernorm.weight`),
    gate,
    up,
    down: read(`${p}mlp.down_proj.weight`),
    gateBias: opt("mlp.gate_proj.bias", c.mlpBias),
    upBias: opt("mlp.up_proj.bias", c.mlpBias),
    downBias: opt("mlp.down_proj.bias", c.mlpBias),
  }
}
