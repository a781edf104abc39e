/**
 * The llama family's tensors in a Hugging Face checkpoint: which names to expect for a config, checked
 * against the safetensors headers (presence, dtype, shape) before anything is read or uploaded, and read
 * per layer with Phi-3's fused projections split into q/k/v and gate/up.
 */
import { inputError } from "../../../common/errors.ts"
import { type Checkpoint, FLOAT_DTYPES, type TensorInfo, isFloatDType } from "../../../common/safetensors.ts"
import type { LlamaConfig } from "./config.ts"

/** One layer's weights on the host, HF layout ([out, in] for linears). */
export interface HostLayer {
  readonly inputNorm: Float32Array
  readonly q: Float32Array
  readonly k: Float32Array
  readonly v: Float32Array
  readonly o: Float32Array
  readonly qBias: Float32Array | undefined
  readonly kBias: Float32Array | undefined
  readonly vBias: Float32Array | undefined
  readonly oBias: Float32Array | undefined
  readonly postNorm: Float32Array
  readonly gate: Float32Array
  readonly up: Float32Array
  readonly down: Float32Array
  readonly gateBias: Float32Array | undefined
  readonly upBias: Float32Array | undefined
  readonly downBias: Float32Array | undefined
}

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
export function validateCheckpoint(c: LlamaConfig, ckpt: Checkpoint): void {
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

/** Reads layer i (after validateCheckpoint), splitting fused projections the way transformers does. */
export function readLayer(c: LlamaConfig, ckpt: Checkpoint, i: number): HostLayer {
  const p = layerPrefix(i)
  const D = c.hiddenSize
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  const I = c.intermediateSize
  const opt = (name: string, present: boolean): Float32Array | undefined => (present ? ckpt.read(p + name) : undefined)
  let q: Float32Array, k: Float32Array, v: Float32Array, gate: Float32Array, up: Float32Array
  if (c.fused) {
    // Phi-3: rows [q | k | v] and [gate | up] (the MLP chunks gate first).
    const qkv = ckpt.read(`${p}self_attn.qkv_proj.weight`)
    q = qkv.slice(0, qDim * D)
    k = qkv.slice(qDim * D, (qDim + kvDim) * D)
    v = qkv.slice((qDim + kvDim) * D, (qDim + 2 * kvDim) * D)
    const gu = ckpt.read(`${p}mlp.gate_up_proj.weight`)
    gate = gu.slice(0, I * D)
    up = gu.slice(I * D, 2 * I * D)
  } else {
    q = ckpt.read(`${p}self_attn.q_proj.weight`)
    k = ckpt.read(`${p}self_attn.k_proj.weight`)
    v = ckpt.read(`${p}self_attn.v_proj.weight`)
    gate = ckpt.read(`${p}mlp.gate_proj.weight`)
    up = ckpt.read(`${p}mlp.up_proj.weight`)
  }
  return {
    inputNorm: ckpt.read(`${p}input_layernorm.weight`),
    q,
    k,
    v,
    o: ckpt.read(`${p}self_attn.o_proj.weight`),
    qBias: opt("self_attn.q_proj.bias", c.qkvBias),
    kBias: opt("self_attn.k_proj.bias", c.qkvBias),
    vBias: opt("self_attn.v_proj.bias", c.qkvBias),
    oBias: opt("self_attn.o_proj.bias", c.oBias),
    postNorm: ckpt.read(`${p}post_attention_layernorm.weight`),
    gate,
    up,
    down: ckpt.read(`${p}mlp.down_proj.weight`),
    gateBias: opt("mlp.gate_proj.bias", c.mlpBias),
    upBias: opt("mlp.up_proj.bias", c.mlpBias),
    downBias: opt("mlp.down_proj.bias", c.mlpBias),
  }
}
