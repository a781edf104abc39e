/**
 * A GPT-NeoX layer's weights on the host: the fused query_key_value rows split into q, k and v. NeoX lays
 * them out per head, [head 0: q(hd), k(hd), v(hd), head 1: ...] (transformers' GPTNeoXAttention view), not
 * as three blocks.
 */
import { type Checkpoint, inputError } from "../../../plugins/api.ts"
import type { NeoxConfig } from "./config.ts"
import { neoxTensors } from "./config.ts"

export interface NeoxLayer {
  readonly ln1: { readonly w: Float32Array; readonly b: Float32Array }
  readonly ln2: { readonly w: Float32Array; readonly b: Float32Array }
  readonly q: Float32Array
  readonly k: Float32Array
  readonly v: Float32Array
  readonly qBias: Float32Array
  readonly kBias: Float32Array
  readonly vBias: Float32Array
  readonly o: Float32Array
  readonly oBias: Float32Array
  readonly up: Float32Array
  readonly upBias: Float32Array
  readonly down: Float32Array
  readonly downBias: Float32Array
}

/** Checks every tensor's presence and shape from the headers (nothing is read). */
export function validateNeox(c: NeoxConfig, ckpt: Checkpoint): void {
  for (const [name, shape] of neoxTensors(c)) {
    const info = ckpt.get(name)
    if (info === undefined) throw inputError(ckpt.source, `missing tensor "${name}" (expected shape [${shape.join(", ")}])`)
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw inputError(info.file, `tensor "${name}" has shape [${info.shape.join(", ")}]; expected [${shape.join(", ")}] from config.json`)
    }
  }
}

/** Rows (each `width` long) of the per-head interleaved [q|k|v] block `part` (0 q, 1 k, 2 v). */
export function splitQkv(fused: Float32Array, heads: number, headDim: number, width: number, part: 0 | 1 | 2): Float32Array {
  const out = new Float32Array(heads * headDim * width)
  for (let h = 0; h < heads; h++) {
    const from = (h * 3 + part) * headDim * width
    out.set(fused.subarray(from, from + headDim * width), h * headDim * width)
  }
  return out
}

export function readNeoxLayer(c: NeoxConfig, ckpt: Checkpoint, l: number): NeoxLayer {
  const p = `gpt_neox.layers.${l}.`
  const r = (n: string) => ckpt.read(p + n)
  const qkv = r("attention.query_key_value.weight"), qkvBias = r("attention.query_key_value.bias")
  const split = (part: 0 | 1 | 2) => splitQkv(qkv, c.numHeads, c.headDim, c.hiddenSize, part)
  const splitBias = (part: 0 | 1 | 2) => splitQkv(qkvBias, c.numHeads, c.headDim, 1, part)
  return {
    ln1: { w: r("input_layernorm.weight"), b: r("input_layernorm.bias") },
    ln2: { w: r("post_attention_layernorm.weight"), b: r("post_attention_layernorm.bias") },
    q: split(0), k: split(1), v: split(2), qBias: splitBias(0), kBias: splitBias(1), vBias: splitBias(2),
    o: r("attention.dense.weight"), oBias: r("attention.dense.bias"),
    up: r("mlp.dense_h_to_4h.weight"), upBias: r("mlp.dense_h_to_4h.bias"),
    down: r("mlp.dense_4h_to_h.weight"), downBias: r("mlp.dense_4h_to_h.bias"),
  }
}
