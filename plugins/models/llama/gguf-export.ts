/**
 * A llama-family checkpoint as a GGUF file for llama.cpp (architecture "llama").
 *
 * llama.cpp's llama architecture rotates interleaved pairs (2j, 2j+1) while HF checkpoints are laid out
 * for rotate_half pairs (j, j + d/2), so q and k rows are permuted per head, as llama.cpp's converter does.
 * The tokenizer is written as a byte vocabulary (GPT-2 byte-to-unicode strings) when the model has no
 * tokenizer of its own: llama.cpp needs one to load, and scoring passes token ids directly.
 */
import type { GgufFile, GgufTensor, GgufValue } from "../gguf.ts"
import type { LlamaConfig } from "./config.ts"
import type { HostLayer } from "./weights.ts"

export interface HostLlama {
  readonly config: LlamaConfig
  readonly embed: Float32Array
  readonly norm: Float32Array
  /** undefined when tied to the embeddings. */
  readonly lmHead: Float32Array | undefined
  readonly layers: readonly HostLayer[]
}

export interface GgufExportOptions {
  readonly dtype?: "f32" | "f16"
  readonly name?: string
  /** Context length recorded in the file (defaults to max_position_embeddings). */
  readonly contextLength?: number
}

/** Rows of one head go from [first half | second half] to interleaved pairs. */
export function permuteRotaryRows(w: Float32Array, heads: number, headDim: number, cols: number, rotaryDim = headDim): Float32Array {
  const out = new Float32Array(w.length)
  const half = rotaryDim / 2
  for (let h = 0; h < heads; h++) {
    for (let r = 0; r < headDim; r++) {
      // Destination row r takes source row src(r); rows beyond the rotary dims stay where they are.
      const src = r < rotaryDim ? (r % 2 === 0 ? r / 2 : half + (r - 1) / 2) : r
      out.set(w.subarray((h * headDim + src) * cols, (h * headDim + src + 1) * cols), (h * headDim + r) * cols)
    }
  }
  return out
}

/** GPT-2's byte-to-unicode map: printable strings for the 256 byte tokens. */
function byteTokens(): string[] {
  const direct: number[] = []
  for (let b = 33; b <= 126; b++) direct.push(b)
  for (let b = 161; b <= 172; b++) direct.push(b)
  for (let b = 174; b <= 255; b++) direct.push(b)
  const out = new Array<string>(256)
  let extra = 0
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(direct.includes(b) ? b : 256 + extra++)
  return out
}

function ropeMetadata(c: LlamaConfig): [string, GgufValue][] {
  const s = c.rope.scaling
  const type = s === undefined ? "default" : String(s["rope_type"] ?? s["type"] ?? "default")
  if (type === "default") return [["llama.rope.scaling.type", { type: "string", value: "none" }]]
  if (type === "linear") {
    return [
      ["llama.rope.scaling.type", { type: "string", value: "linear" }],
      ["llama.rope.scaling.factor", { type: "f32", value: Number(s?.["factor"]) }],
    ]
  }
  throw new Error(`GGUF export: rope_scaling type "${type}" is not exported yet (supported: none, linear)`)
}

export function llamaToGguf(m: HostLlama, options: GgufExportOptions = {}): GgufFile {
  const c = m.config
  if (c.qkvBias || c.oBias || c.mlpBias) throw new Error("GGUF export: biases are not exported yet")
  const dtype = options.dtype ?? "f32"
  const arch = "llama"
  const vocab = c.vocabSize
  const tokens = byteTokens()
  for (let i = 256; i < vocab; i++) tokens.push(`<extra_${i}>`)
  const tokenTypes = tokens.map((_, i) => (i < 256 ? 1 : 4))
  const metadata = new Map<string, GgufValue>([
    ["general.architecture", { type: "string", value: arch }],
    ["general.name", { type: "string", value: options.name ?? "ropeway" }],
    ["general.alignment", { type: "u32", value: 32 }],
    [`${arch}.context_length`, { type: "u32", value: options.contextLength ?? c.rope.maxPositions }],
    [`${arch}.embedding_length`, { type: "u32", value: c.hiddenSize }],
    [`${arch}.block_count`, { type: "u32", value: c.numLayers }],
    [`${arch}.feed_forward_length`, { type: "u32", value: c.intermediateSize }],
    [`${arch}.attention.head_count`, { type: "u32", value: c.numHeads }],
    [`${arch}.attention.head_count_kv`, { type: "u32", value: c.numKvHeads }],
    [`${arch}.attention.key_length`, { type: "u32", value: c.headDim }],
    [`${arch}.attention.value_length`, { type: "u32", value: c.headDim }],
    [`${arch}.attention.layer_norm_rms_epsilon`, { type: "f32", value: c.rmsNormEps }],
    [`${arch}.rope.freq_base`, { type: "f32", value: c.rope.base }],
    [`${arch}.rope.dimension_count`, { type: "u32", value: c.rope.rotaryDim }],
    [`${arch}.vocab_size`, { type: "u32", value: vocab }],
    ...ropeMetadata(c),
    ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
    ["tokenizer.ggml.pre", { type: "string", value: "default" }],
    ["tokenizer.ggml.tokens", { type: "string[]", value: tokens.slice(0, vocab) }],
    ["tokenizer.ggml.token_type", { type: "i32[]", value: tokenTypes.slice(0, vocab) }],
    ["tokenizer.ggml.merges", { type: "string[]", value: [] }],
    ["tokenizer.ggml.add_bos_token", { type: "bool", value: false }],
  ])
  const D = c.hiddenSize
  const t = (name: string, shape: number[], data: Float32Array): GgufTensor => ({
    name,
    shape,
    data,
    // llama.cpp keeps 1-D tensors (norms) in f32 whatever the file type.
    dtype: shape.length === 1 ? "f32" : dtype,
  })
  const tensors: GgufTensor[] = [t("token_embd.weight", [vocab, D], m.embed)]
  const qDim = c.numHeads * c.headDim
  const kvDim = c.numKvHeads * c.headDim
  m.layers.forEach((l, i) => {
    const p = `blk.${i}.`
    tensors.push(
      t(`${p}attn_norm.weight`, [D], l.inputNorm),
      t(`${p}attn_q.weight`, [qDim, D], permuteRotaryRows(l.q, c.numHeads, c.headDim, D, c.rope.rotaryDim)),
      t(`${p}attn_k.weight`, [kvDim, D], permuteRotaryRows(l.k, c.numKvHeads, c.headDim, D, c.rope.rotaryDim)),
      t(`${p}attn_v.weight`, [kvDim, D], l.v),
      t(`${p}attn_output.weight`, [D, qDim], l.o),
      t(`${p}ffn_norm.weight`, [D], l.postNorm),
      t(`${p}ffn_gate.weight`, [c.intermediateSize, D], l.gate),
      t(`${p}ffn_up.weight`, [c.intermediateSize, D], l.up),
      t(`${p}ffn_down.weight`, [D, c.intermediateSize], l.down),
    )
  })
  tensors.push(t("output_norm.weight", [D], m.norm))
  if (m.lmHead !== undefined) tensors.push(t("output.weight", [vocab, D], m.lmHead))
  return { metadata, tensors }
}
