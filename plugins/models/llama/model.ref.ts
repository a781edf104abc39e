/**
 * An independent float64 implementation of transformers' llama-family forward: the reference the model is
 * tested against (test/models/) and the baseline bench/scoring.ts measures.
 *
 * Plain loops over Float64Array, whole sequence at once (no chunks, no KV cache), its own RoPE from the
 * config (default, linear and llama3 scaling only) or from explicit inverse frequencies + attention factor (+ start
 * tokens, per layer) that a test computes itself; rotate_half, repeat_kv for GQA, RMSNorm, SwiGLU, tied
 * head, log_softmax. It shares nothing with the GPU path or plugins/rope: it reads the config object and the
 * HF-named tensors directly, splitting Phi-3's fused projections itself.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { Checkpoint } from "../../../common/safetensors.ts"

/** Tensors by HF name in float64: a Map, or a folder read one tensor at a time (`referenceModelFromFolder`). */
interface Tensors {
  get(name: string): { readonly shape: readonly number[]; readonly data: Float64Array } | undefined
  has(name: string): boolean
}

export interface ReferenceModel {
  readonly config: Readonly<Record<string, unknown>>
  readonly tensors: Tensors
}

/**
 * A model folder as the reference reads it, each tensor read from its file (decoded exactly to float64)
 * only when asked and not kept: memory holds about one layer, so models of billions of parameters can be
 * checked. Reads config.json and the safetensors files itself (through the shared format reader only).
 */
export function referenceModelFromFolder(dir: string): ReferenceModel {
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>
  const ckpt = Checkpoint.open(dir)
  return {
    config,
    tensors: {
      has: (name) => ckpt.get(name) !== undefined,
      get: (name) => {
        const info = ckpt.get(name)
        return info === undefined ? undefined : { shape: info.shape, data: Float64Array.from(ckpt.read(name)) }
      },
    },
  }
}

const num = (c: Readonly<Record<string, unknown>>, k: string, fallback?: number): number => {
  const v = c[k]
  if (typeof v === "number") return v
  if (fallback !== undefined) return fallback
  throw new Error(`reference: config lacks ${k}`)
}

/** x [T, inF] · W[out, inF]ᵀ (+ b) → [T, out]; four rows at a time share each weight load (2× faster, same sums). */
function linear(x: Float64Array, T: number, inF: number, w: Float64Array, out: number, b?: Float64Array): Float64Array {
  const y = new Float64Array(T * out)
  let t = 0
  for (; t + 4 <= T; t += 4) {
    const x0 = t * inF
    const x1 = x0 + inF
    const x2 = x1 + inF
    const x3 = x2 + inF
    for (let o = 0; o < out; o++) {
      const wo = o * inF
      const b0 = b === undefined ? 0 : b[o]!
      let s0 = b0, s1 = b0, s2 = b0, s3 = b0
      for (let i = 0; i < inF; i++) {
        const wv = w[wo + i]!
        s0 += x[x0 + i]! * wv
        s1 += x[x1 + i]! * wv
        s2 += x[x2 + i]! * wv
        s3 += x[x3 + i]! * wv
      }
      y[t * out + o] = s0
      y[(t + 1) * out + o] = s1
      y[(t + 2) * out + o] = s2
      y[(t + 3) * out + o] = s3
    }
  }
  for (; t < T; t++) {
    const xo = t * inF
    for (let o = 0; o < out; o++) {
      const wo = o * inF
      let s = b === undefined ? 0 : b[o]!
      for (let i = 0; i < inF; i++) s += x[xo + i]! * w[wo + i]!
      y[t * out + o] = s
    }
  }
  return y
}

function rmsnorm(x: Float64Array, T: number, D: number, w: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(T * D)
  for (let t = 0; t < T; t++) {
    let ss = 0
    for (let i = 0; i < D; i++) ss += x[t * D + i]! ** 2
    const r = 1 / Math.sqrt(ss / D + eps)
    for (let i = 0; i < D; i++) y[t * D + i] = w[i]! * (x[t * D + i]! * r)
  }
  return y
}

/** RoPE tables cos/sin [T, rd/2] in float64; inv_freq = 1/(theta^(2i/rd)) / linear factor. */
function ropeTables(config: Readonly<Record<string, unknown>>, scaling: Readonly<Record<string, unknown>> | null, headDim: number, T: number) {
  const theta = num(config, "rope_theta", 10000)
  const rd = Math.floor(headDim * num(config, "partial_rotary_factor", 1))
  let factor = 1
  const type = scaling === null ? "default" : (scaling["rope_type"] ?? scaling["type"])
  if (type === "llama3") return explicitTables(config, headDim, T, { invFreq: llama3InvFreq(rd, theta, scaling!) })
  if (type === "linear") factor = scaling!["factor"] as number
  else if (type !== "default") throw new Error(`reference: rope type ${String(type)} not implemented`)
  const inv = new Float64Array(rd / 2)
  for (let i = 0; i < rd / 2; i++) inv[i] = 1 / theta ** ((2 * i) / rd) / factor
  return explicitTables(config, headDim, T, { invFreq: inv })
}

/** transformers' _compute_llama3_parameters (the same at every length), in float64. */
function llama3InvFreq(rd: number, theta: number, s: Readonly<Record<string, unknown>>): Float64Array {
  const [factor, low, high, original] = ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"].map((k) => num(s, k))
  const out = new Float64Array(rd / 2)
  const lowWave = original! / low!
  const highWave = original! / high!
  for (let i = 0; i < rd / 2; i++) {
    const f = 1 / theta ** ((2 * i) / rd)
    const wave = (2 * Math.PI) / f
    if (wave < highWave) out[i] = f
    else if (wave > lowWave) out[i] = f / factor!
    else {
      const smooth = (original! / wave - low!) / (high! - low!)
      out[i] = (1 - smooth) * (f / factor!) + smooth * f
    }
  }
  return out
}

/**
 * cos/sin from explicit inverse frequencies: m·cos(t·θ'_i), m·sin(t·θ'_i) for t ≥ n̂, and the unscaled
 * original rotation cos(t·θ_i), sin(t·θ_i) below n̂ (LongRoPE's start tokens).
 */
function explicitTables(config: Readonly<Record<string, unknown>>, headDim: number, T: number, rope: ExplicitRope, layer = 0) {
  const theta = num(config, "rope_theta", 10000)
  const rd = Math.floor(headDim * num(config, "partial_rotary_factor", 1))
  const half = rd / 2
  const inv = rope.invFreq instanceof Float64Array ? rope.invFreq : rope.invFreq[layer]!
  if (inv.length !== half) throw new Error(`reference: ${inv.length} inverse frequencies, expected ${half}`)
  const m = rope.attentionFactor ?? 1
  const start = rope.startTokens ?? 0
  const cos = new Float64Array(T * half)
  const sin = new Float64Array(T * half)
  for (let i = 0; i < half; i++) {
    const orig = rope.originalInvFreq?.[i] ?? 1 / theta ** ((2 * i) / rd)
    for (let t = 0; t < T; t++) {
      const early = t < start
      const a = t * (early ? orig : inv[i]!)
      const s = early ? 1 : m
      cos[t * half + i] = s * Math.cos(a)
      sin[t * half + i] = s * Math.sin(a)
    }
  }
  return { rd, half, cos, sin }
}

/** In place on x [T, heads*hd] (row t at position first + t): q·cos + rotate_half(q)·sin over the first rd dims of each head. */
function applyRope(x: Float64Array, T: number, heads: number, hd: number, r: ReturnType<typeof explicitTables>, first = 0): void {
  const { half, cos, sin } = r
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const o = t * heads * hd + h * hd
      for (let i = 0; i < half; i++) {
        const c = cos[(first + t) * half + i]!
        const s = sin[(first + t) * half + i]!
        const a = x[o + i]!
        const b = x[o + i + half]!
        // rotate_half(x) = [-x2, x1]
        x[o + i] = a * c - b * s
        x[o + i + half] = b * c + a * s
      }
    }
  }
}

/**
 * A RoPE given directly (the tests compute it from the transformers formulas themselves): HF's inv_freq
 * and attention_factor (which multiplies cos and sin), optionally per layer and with start tokens n̂.
 */
export interface ExplicitRope {
  /** θ'_i for i < rotary_dim/2, or one such array per layer. */
  readonly invFreq: Float64Array | readonly Float64Array[]
  /** Multiplies cos and sin (HF attention_scaling); default 1. */
  readonly attentionFactor?: number
  /** Positions below keep the original rotation and no scale; default 0. */
  readonly startTokens?: number
  /** θ_i used below n̂; default rope_theta^(−2i/rd) from the config. */
  readonly originalInvFreq?: Float64Array
}

export interface ReferenceOptions {
  /** Replaces config.rope_scaling (null: plain RoPE). */
  readonly ropeScaling?: Readonly<Record<string, unknown>> | null
  /** Explicit RoPE; wins over ropeScaling and the config. */
  readonly rope?: ExplicitRope
}

/** ln p(tokens[i+1] | tokens[..i]) for i < n−1, in float64. */
export function referenceLogprobs(model: ReferenceModel, tokens: readonly number[], opts: ReferenceOptions = {}): Float64Array {
  const { hn, head, D, V } = referenceForward(model, tokens, opts)
  const T = tokens.length
  const out = new Float64Array(Math.max(0, T - 1))
  for (let t = 0; t < T - 1; t++) {
    const lp = logSoftmaxRow(hn, t, head, D, V)
    out[t] = lp[tokens[t + 1]!]!
  }
  return out
}

/** ln p(next token) over the whole vocabulary after the last of `tokens`, in float64. */
export function referenceNextLogprobs(model: ReferenceModel, tokens: readonly number[], opts: ReferenceOptions = {}): Float64Array {
  const { hn, head, D, V } = referenceForward(model, tokens, opts)
  return logSoftmaxRow(hn, tokens.length - 1, head, D, V)
}

function logSoftmaxRow(hn: Float64Array, t: number, head: Float64Array, D: number, V: number): Float64Array {
  const logits = new Float64Array(V)
  let max = -Infinity
  for (let vv = 0; vv < V; vv++) {
    let s = 0
    for (let i = 0; i < D; i++) s += hn[t * D + i]! * head[vv * D + i]!
    logits[vv] = s
    if (s > max) max = s
  }
  let sum = 0
  for (let vv = 0; vv < V; vv++) sum += Math.exp(logits[vv]! - max)
  const lse = max + Math.log(sum)
  for (let vv = 0; vv < V; vv++) logits[vv] = logits[vv]! - lse
  return logits
}

/**
 * Incremental decoding with re-rotated keys, in float64: the semantics of generation with the `rerotate`
 * policy. The first `prefill` tokens run with `ropeFor(prefill)`; then each later token at position L−1 runs
 * with `ropeFor(L)`, attending to every earlier position's *cached* key and value: the key as computed then
 * (from hidden states of earlier forwards), rotated with the current table. Returns the next-token
 * log-probs after lengths prefill, prefill+1, …, tokens.length.
 *
 * In a model with more than one layer this differs from a fresh prefill with the new table, since the
 * cached hidden states of layers ≥ 1 came from attention under the old table.
 */
export function referenceDecode(model: ReferenceModel, tokens: readonly number[], prefill: number, ropeFor: (length: number) => ExplicitRope): Float64Array[] {
  const state: DecodeState = { rawK: [], v: [] }
  const out: Float64Array[] = []
  for (let L = prefill; L <= tokens.length; L++) {
    const start = L === prefill ? 0 : L - 1
    const { hn, head, D, V } = referenceForward(model, tokens.slice(0, L), { rope: ropeFor(L) }, start, state)
    out.push(logSoftmaxRow(hn, L - start - 1, head, D, V))
  }
  return out
}

/** Per layer: un-rotated keys and values of every position processed so far. */
interface DecodeState {
  readonly rawK: Float64Array[]
  readonly v: Float64Array[]
}

const concat = (a: Float64Array | undefined, b: Float64Array): Float64Array => {
  if (a === undefined || a.length === 0) return b
  const out = new Float64Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}

/**
 * Causal softmax attention; head h reads kv head floor(h / (H/KV)) (repeat_kv). Query row t sits at
 * position start + t and attends to positions 0..start+t.
 */
function attend(q: Float64Array, k: Float64Array, v: Float64Array, d: { n: number; T: number; H: number; KV: number; hd: number; start: number }): Float64Array {
  const { n, T, H, KV, hd, start } = d
  const att = new Float64Array(n * H * hd)
  const scale = 1 / Math.sqrt(hd)
  const scores = new Float64Array(T)
  for (let hh = 0; hh < H; hh++) {
    const kvh = Math.floor(hh / (H / KV))
    for (let t = 0; t < n; t++) {
      const qo = t * H * hd + hh * hd
      const last = start + t
      let max = -Infinity
      for (let s = 0; s <= last; s++) {
        const ko = s * KV * hd + kvh * hd
        let dot = 0
        for (let i = 0; i < hd; i++) dot += q[qo + i]! * k[ko + i]!
        scores[s] = dot * scale
        if (scores[s]! > max) max = scores[s]!
      }
      let sum = 0
      for (let s = 0; s <= last; s++) {
        scores[s] = Math.exp(scores[s]! - max)
        sum += scores[s]!
      }
      for (let s = 0; s <= last; s++) {
        const wgt = scores[s]! / sum
        const vo = s * KV * hd + kvh * hd
        for (let i = 0; i < hd; i++) att[qo + i] = att[qo + i]! + wgt * v[vo + i]!
      }
    }
  }
  return att
}

/**
 * The forward of tokens[start..T) given the keys/values of positions < start in `state` (which it extends);
 * without a state, start is 0 and this is the plain whole-sequence forward. Returns the final-normed hidden
 * states of the new rows [T − start, D] and the output head.
 */
function referenceForward(model: ReferenceModel, tokens: readonly number[], opts: ReferenceOptions, start = 0, state?: DecodeState) {
  const c = model.config
  const get = (name: string): Float64Array => {
    const t = model.tensors.get(name)
    if (t === undefined) throw new Error(`reference: no tensor ${name}`)
    return t.data
  }
  const has = (name: string): boolean => model.tensors.has(name)
  const arch = (c["architectures"] as string[])[0]
  const D = num(c, "hidden_size")
  const H = num(c, "num_attention_heads")
  const KV = num(c, "num_key_value_heads", H)
  const hd = typeof c["head_dim"] === "number" ? (c["head_dim"] as number) : D / H
  const I = num(c, "intermediate_size")
  const V = num(c, "vocab_size")
  const L = num(c, "num_hidden_layers")
  const eps = num(c, "rms_norm_eps")
  const tied = c["tie_word_embeddings"] === true
  const T = tokens.length
  const scaling = opts.ropeScaling !== undefined ? opts.ropeScaling : ((c["rope_scaling"] as Record<string, unknown> | null | undefined) ?? null)
  const shared = opts.rope !== undefined ? undefined : ropeTables(c, scaling, hd, T)
  const ropeAt = (l: number) => (opts.rope !== undefined ? explicitTables(c, hd, T, opts.rope, l) : shared)

  const emb = get("model.embed_tokens.weight")
  const n = T - start // new rows; row t is position start + t
  let x = new Float64Array(n * D)
  for (let t = 0; t < n; t++) x.set(emb.subarray(tokens[start + t]! * D, tokens[start + t]! * D + D), t * D)

  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`
    const { wq, wk, wv, wg, wu } = projections(get, arch === "Phi3ForCausalLM", p, { H, KV, hd, D, I })
    const bias = (n: string): Float64Array | undefined => (has(p + n) ? get(p + n) : undefined)

    const h = rmsnorm(x, n, D, get(`${p}input_layernorm.weight`), eps)
    const q = linear(h, n, D, wq, H * hd, bias("self_attn.q_proj.bias"))
    const rawK = concat(state?.rawK[l], linear(h, n, D, wk, KV * hd, bias("self_attn.k_proj.bias")))
    const v = concat(state?.v[l], linear(h, n, D, wv, KV * hd, bias("self_attn.v_proj.bias")))
    if (state !== undefined) {
      state.rawK[l] = rawK
      state.v[l] = v
    }
    if (rawK.length !== T * KV * hd) throw new Error(`reference: ${rawK.length / (KV * hd)} cached + new rows, expected ${T}`)
    const rope = ropeAt(l)!
    applyRope(q, n, H, hd, rope, start)
    // Every key rotated with the current table (what re-rotation of a cache does).
    const k = Float64Array.from(rawK)
    applyRope(k, T, KV, hd, rope)

    const att = attend(q, k, v, { n, T, H, KV, hd, start })
    const o = linear(att, n, H * hd, get(`${p}self_attn.o_proj.weight`), D, bias("self_attn.o_proj.bias"))
    for (let i = 0; i < x.length; i++) x[i] = x[i]! + o[i]!

    const h2 = rmsnorm(x, n, D, get(`${p}post_attention_layernorm.weight`), eps)
    const g = linear(h2, n, D, wg, I, bias("mlp.gate_proj.bias"))
    const u = linear(h2, n, D, wu, I, bias("mlp.up_proj.bias"))
    for (let i = 0; i < g.length; i++) g[i] = (g[i]! / (1 + Math.exp(-g[i]!))) * u[i]!
    const down = linear(g, n, I, get(`${p}mlp.down_proj.weight`), D, bias("mlp.down_proj.bias"))
    const next = new Float64Array(x.length)
    for (let i = 0; i < x.length; i++) next[i] = x[i]! + down[i]!
    x = next
  }

  const hn = rmsnorm(x, n, D, get("model.norm.weight"), eps)
  const head = tied ? emb : get("lm_head.weight")
  return { hn, head, D, V }
}

/** Layer p's q/k/v and gate/up weights, split out of Phi-3's fused qkv_proj (rows q | k | v) and gate_up_proj (gate | up). */
function projections(get: (name: string) => Float64Array, fused: boolean, p: string, dims: { H: number; KV: number; hd: number; D: number; I: number }) {
  const { H, KV, hd, D, I } = dims
  if (!fused) {
    return {
      wq: get(`${p}self_attn.q_proj.weight`),
      wk: get(`${p}self_attn.k_proj.weight`),
      wv: get(`${p}self_attn.v_proj.weight`),
      wg: get(`${p}mlp.gate_proj.weight`),
      wu: get(`${p}mlp.up_proj.weight`),
    }
  }
  const qkv = get(`${p}self_attn.qkv_proj.weight`)
  const gu = get(`${p}mlp.gate_up_proj.weight`)
  return {
    wq: qkv.subarray(0, H * hd * D),
    wk: qkv.subarray(H * hd * D, (H + KV) * hd * D),
    wv: qkv.subarray((H + KV) * hd * D, (H + 2 * KV) * hd * D),
    wg: gu.subarray(0, I * D),
    wu: gu.subarray(I * D, 2 * I * D),
  }
}

/** Random token ids in [0, vocab), seeded. */
export function randomTokens(n: number, vocab: number, seed: number): number[] {
  let a = seed >>> 0
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0
    out.push(Math.floor(((a >>> 8) / 2 ** 24) * vocab))
  }
  return out
}
