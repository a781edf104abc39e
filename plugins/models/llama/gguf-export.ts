/**
 * A llama-family checkpoint as a GGUF file for llama.cpp (architecture "llama").
 *
 * llama.cpp's llama architecture rotates interleaved pairs (2j, 2j+1) while HF checkpoints are laid out
 * for rotate_half pairs (j, j + d/2), so q and k rows are permuted per head, as llama.cpp's converter does.
 * The tokenizer is written as a byte vocabulary (GPT-2 byte-to-unicode strings) when the model has no
 * tokenizer of its own: llama.cpp needs one to load, and scoring passes token ids directly.
 * RoPE goes out in the form llama.cpp computes HF's table with (ggufRope: none, linear, YaRN, LongRoPE
 * short/long factor tensors, or any fixed table as rope_freqs); llamaCppRope reads a file's RoPE back the
 * way llama.cpp will apply it, for export checks. The llama architecture loads rope_factors_long/short
 * itself (when rope.scaling.type is "longrope"), so Phi-3 checkpoints go out as "llama" too (split, permuted).
 */
import { inputError } from "../../../common/errors.ts"
import { yarnGetMscale } from "../../rope/factors.ts"
import { readLongrope } from "../../rope/longrope.ts"
import { Params } from "../../rope/params.ts"
import { methodName, resolveRope } from "../../rope/index.ts"
import type { RopeSpec } from "../../rope/types.ts"
import type { GgufFile, GgufTensor, GgufValue } from "../../../common/gguf.ts"
import type { LlamaConfig } from "./config.ts"
import type { InspectedLlama } from "./model.ts"
import { type HostLayer, readLayer } from "./weights.ts"

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
  /** YaRN as llama.cpp's own YaRN ("native", when it can match HF) or as a fixed rope_freqs table. */
  readonly yarn?: "native" | "factors"
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

/** The inverse of permuteRotaryRows: interleaved pairs back to HF's [first half | second half]. */
export function unpermuteRotaryRows(w: Float32Array, heads: number, headDim: number, cols: number, rotaryDim = headDim): Float32Array {
  const out = new Float32Array(w.length)
  const half = rotaryDim / 2
  for (let h = 0; h < heads; h++) {
    for (let r = 0; r < headDim; r++) {
      const src = r < rotaryDim ? (r % 2 === 0 ? r / 2 : half + (r - 1) / 2) : r
      out.set(w.subarray((h * headDim + r) * cols, (h * headDim + r + 1) * cols), (h * headDim + src) * cols)
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

/** How a RoPE setting went into the file (for checks.json and reports). */
export interface GgufRope {
  readonly metadata: readonly [string, GgufValue][]
  /** rope_factors_long/short or rope_freqs (one [rotaryDim/2] f32 tensor each; llama.cpp shares it across layers). */
  readonly tensors: readonly GgufTensor[]
  /** "none", "linear", "yarn", "longrope", or "freq-factors" (a fixed table as rope_freqs + attn_factor). */
  readonly form: string
  readonly notes: readonly string[]
}

/**
 * The RoPE keys and tensors for llama.cpp's "llama" architecture, chosen so llama.cpp computes HF's table
 * (read from the llama.cpp that node-llama-cpp 3.21.1 bundles: src/llama-model.cpp, src/llama-context.cpp,
 * src/models/llama.cpp, ggml-cpu rope):
 * - linear: type "linear" + factor (freq_scale = 1/factor).
 * - yarn: type "yarn", factor, original_context_length (its ramp's n_ctx_orig). llama.cpp's final
 *   magnitude is rope.scaling.attn_factor × get_mscale(factor) (it cancels its own default and ggml multiplies
 *   it back), so attn_factor = m_HF / get_mscale(factor). The llama architecture reads neither
 *   yarn_beta_fast/slow nor yarn_attn_factor (it uses 32/1): other betas, or truncate false, go out as
 *   freq-factors instead.
 * - longrope: type "longrope" (no factor key: it would also scale every frequency), original_context_length
 *   L0, attn_factor = HF's attention factor (applied to both sets, as HF does), rope_factors_long/short.
 *   llama.cpp picks long when its allocated context per sequence (padded up to a multiple of 256) exceeds
 *   L0, short otherwise; HF picks by the input's length.
 * - any other length-independent table (ntk, llama3, yarn with other betas): type "none" + rope_freqs = λ_i
 *   and attn_factor = m; llama.cpp divides each pair's angle by rope_freqs[i] (as for Llama 3.1).
 */
export function ggufRope(spec: RopeSpec, arch = "llama", options: { readonly yarn?: "native" | "factors" } = {}): GgufRope {
  const s = spec.scaling
  const type = methodName(s)
  const key = (k: string) => `${arch}.rope.scaling.${k}`
  const f32 = (value: number): GgufValue => ({ type: "f32", value })
  const half = spec.rotaryDim / 2
  const factorTensor = (name: string, v: ArrayLike<number>): GgufTensor => ({ name, shape: [half], data: Float32Array.from(v), dtype: "f32" })
  if (type === "default") return { metadata: [[key("type"), { type: "string", value: "none" }]], tensors: [], form: "none", notes: [] }
  if (type === "linear") {
    const factor = new Params(spec).requireNum("factor", { positive: true })
    return { metadata: [[key("type"), { type: "string", value: "linear" }], [key("factor"), f32(factor)]], tensors: [], form: "linear", notes: [] }
  }
  if (type === "longrope" || type === "su") {
    const lp = readLongrope(spec)
    const short = lp.shortMscale ?? lp.attentionFactor
    const long = lp.longMscale ?? lp.attentionFactor
    if (short !== long) {
      throw inputError(`${spec.scalingKey ?? "rope_scaling"}`, `short_mscale ${short} ≠ long_mscale ${long}: GGUF has one attention factor for both sets`)
    }
    return {
      metadata: [
        [key("type"), { type: "string", value: "longrope" }],
        [key("original_context_length"), { type: "u32", value: lp.originalLength }],
        [key("attn_factor"), f32(long)],
      ],
      tensors: [factorTensor("rope_factors_long.weight", lp.long), factorTensor("rope_factors_short.weight", lp.short)],
      form: "longrope",
      notes: [
        `llama.cpp uses rope_factors_long when its context per sequence (rounded up to a multiple of 256) exceeds ${lp.originalLength}, ` +
          `else rope_factors_short; HF chooses by input length` + (lp.originalLength < 256 ? ` (L0 ${lp.originalLength} < 256: llama.cpp always uses the long set)` : ""),
      ],
    }
  }
  if (type === "yarn" && options.yarn !== "factors") {
    const p = new Params(spec)
    const betaFast = p.num("beta_fast", { min: 0 }) || 32
    const betaSlow = p.num("beta_slow", { min: 0 }) || 1
    const truncate = p.bool("truncate") ?? true
    if (betaFast === 32 && betaSlow === 1 && truncate) {
      const t = resolveRope(spec)(spec.maxPositions)
      const factor = p.num("factor", { positive: true }) ?? spec.maxPositions / (p.originalMax(false) ?? spec.maxPositions)
      const originalLength = p.originalMax(false) ?? spec.maxPositions
      return {
        metadata: [
          [key("type"), { type: "string", value: "yarn" }],
          [key("factor"), f32(factor)],
          [key("original_context_length"), { type: "u32", value: originalLength }],
          [key("attn_factor"), f32(t.attentionScale / yarnGetMscale(factor))],
          // Not read by llama.cpp's llama architecture (it uses these defaults); written for readers that do.
          [key("yarn_beta_fast"), f32(betaFast)],
          [key("yarn_beta_slow"), f32(betaSlow)],
        ],
        tensors: [],
        form: "yarn",
        notes: [`attn_factor = ${t.attentionScale} / (0.1·ln ${factor} + 1): llama.cpp multiplies its YaRN magnitude back in`],
      }
    }
  }
  // A fixed table: per-dimension divisors as rope_freqs.
  const at = resolveRope(spec)
  const a = at(1)
  // Probed at 1, the max and well past it (dynamic methods change only beyond max_position_embeddings).
  const same = [spec.maxPositions, 8 * spec.maxPositions + 1].every((n) => {
    const b = at(n)
    return a.invFreq instanceof Float64Array && b.invFreq instanceof Float64Array && a.invFreq.every((x, i) => x === (b.invFreq as Float64Array)[i]) &&
      a.attentionScale === b.attentionScale && a.startTokens === 0 && b.startTokens === 0
  })
  if (!same) {
    throw inputError(`${spec.scalingKey ?? "rope_scaling"}.rope_type`, `"${type}" changes with length, per layer or with start tokens; GGUF (llama.cpp) cannot express it (supported: none, linear, yarn, longrope, and fixed tables)`)
  }
  const lambda = (a.invFreq as Float64Array).map((inv, i) => a.originalInvFreq[i]! / inv)
  return {
    metadata: [[key("type"), { type: "string", value: "none" }], [key("attn_factor"), f32(a.attentionScale)]],
    tensors: [factorTensor("rope_freqs.weight", lambda)],
    form: "freq-factors",
    notes: [`${type} as a fixed table: rope_freqs = λ_i, attn_factor ${a.attentionScale}`],
  }
}

export function llamaToGguf(m: HostLlama, options: GgufExportOptions = {}): GgufFile & { readonly rope: GgufRope } {
  const c = m.config
  if (c.qkvBias || c.oBias || c.mlpBias) throw new Error("GGUF export: biases are not exported yet")
  // llama.cpp's llama architecture asserts n_rot == head_dim.
  if (c.rope.rotaryDim !== c.headDim) throw new Error(`GGUF export: partial rotary (${c.rope.rotaryDim} of ${c.headDim} dims) is not supported by llama.cpp's llama architecture`)
  const ropeOnly = ggufRope(c.rope, "llama", options.yarn === undefined ? {} : { yarn: options.yarn })
  const contextLength = options.contextLength ?? c.rope.maxPositions
  // llama.cpp's llama architecture attends to the whole context: say so where the source model does not.
  const rope: GgufRope = c.slidingWindow !== undefined && c.slidingWindow < contextLength
    ? { ...ropeOnly, notes: [...ropeOnly.notes, `the model's sliding window (${c.slidingWindow}) is not in the file: llama.cpp's llama architecture attends to the whole context, so scores differ past ${c.slidingWindow} tokens`] }
    : ropeOnly
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
    [`${arch}.context_length`, { type: "u32", value: contextLength }],
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
    ...rope.metadata,
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
  tensors.push(...rope.tensors)
  return { metadata, tensors, rope }
}

/** A checkpoint's weights on the host (Phi-3's fused projections split), ready for llamaToGguf. */
export function readHostLlama(inspected: InspectedLlama): HostLlama {
  const { config, checkpoint } = inspected
  return {
    config,
    layers: Array.from({ length: config.numLayers }, (_, i) => readLayer(config, checkpoint, i)),
    embed: checkpoint.read("model.embed_tokens.weight"),
    norm: checkpoint.read("model.norm.weight"),
    lmHead: config.tieWordEmbeddings ? undefined : checkpoint.read("lm_head.weight"),
  }
}

/** What llama.cpp will rotate with, from a GGUF file's metadata: θ'_i, the magnitude m, and the factor set used. */
export interface LlamaCppRope {
  readonly invFreq: Float64Array
  readonly attentionScale: number
  /** "rope_factors_long", "rope_factors_short", "rope_freqs" or "none". */
  readonly factors: string
}

/**
 * llama.cpp's RoPE for the llama architecture at an allocated context of `contextSize` tokens per sequence,
 * in float64 (src/llama-model.cpp load_hparams, src/llama-context.cpp, ggml-cpu rope_yarn): freq_scale =
 * 1/factor unless the type is "none"; YaRN blends θ·freq_scale and θ by the ramp over [floor(dim(32)),
 * ceil(dim(1))] with magnitude attn_factor × get_mscale(factor); frequency factors divide the angle.
 */
export function llamaCppRope(file: GgufFile, contextSize: number): LlamaCppRope {
  const meta = (k: string): GgufValue | undefined => file.metadata.get(k)
  const arch = String(meta("general.architecture")?.value ?? "llama")
  const num = (k: string, fallback: number): number => {
    const v = meta(`${arch}.${k}`)?.value
    return typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : fallback
  }
  const nRot = num("rope.dimension_count", num("attention.key_length", 0))
  const base = num("rope.freq_base", 10000)
  const type = String(meta(`${arch}.rope.scaling.type`)?.value ?? "linear")
  const factor = num("rope.scaling.factor", 0)
  const freqScale = type === "none" || factor === 0 ? 1 : 1 / factor
  const orig = num("rope.scaling.original_context_length", num("context_length", 0))
  const attn = num("rope.scaling.attn_factor", 1)
  const nCtx = Math.ceil(contextSize / 256) * 256
  const tensor = (name: string) => file.tensors.find((t) => t.name === name)
  let ff: GgufTensor | undefined
  let which = "none"
  if (type === "longrope") {
    which = nCtx > orig ? "rope_factors_long" : "rope_factors_short"
    ff = tensor(`${which}.weight`)
    if (ff === undefined) which = "none"
  } else if ((ff = tensor("rope_freqs.weight")) !== undefined) which = "rope_freqs"
  const half = nRot / 2
  const inv = new Float64Array(half)
  const corr = (rot: number) => (nRot * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(base))
  const low = Math.max(0, Math.floor(corr(32)))
  const high = Math.min(nRot - 1, Math.ceil(corr(1)))
  for (let i = 0; i < half; i++) {
    const theta = Math.pow(base, (-2 * i) / nRot) / (ff?.data[i] ?? 1)
    if (type === "yarn") {
      const ramp = 1 - Math.min(1, Math.max(0, (i - low) / Math.max(0.001, high - low)))
      inv[i] = theta * freqScale * (1 - ramp) + theta * ramp
    } else inv[i] = theta * freqScale
  }
  return { invFreq: inv, attentionScale: type === "yarn" ? attn * yarnGetMscale(1 / freqScale) : attn, factors: which }
}
