/**
 * An independent float64 implementation of transformers' llama-family forward, for the tests.
 *
 * Plain loops over Float64Array, whole sequence at once (no chunks, no KV cache), its own RoPE from the
 * config (default and linear scaling only), rotate_half, repeat_kv for GQA, RMSNorm, SwiGLU, tied head,
 * log_softmax. It shares nothing with the GPU path or plugins/rope: it reads the config object and the
 * HF-named tensors directly, splitting Phi-3's fused projections itself.
 */

type Tensors = ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float64Array }>

export interface ReferenceModel {
  readonly config: Readonly<Record<string, unknown>>
  readonly tensors: Tensors
}

const num = (c: Readonly<Record<string, unknown>>, k: string, fallback?: number): number => {
  const v = c[k]
  if (typeof v === "number") return v
  if (fallback !== undefined) return fallback
  throw new Error(`reference: config lacks ${k}`)
}

/** x [T, inF] · W[out, inF]ᵀ (+ b) → [T, out]. */
function linear(x: Float64Array, T: number, inF: number, w: Float64Array, out: number, b?: Float64Array): Float64Array {
  const y = new Float64Array(T * out)
  for (let t = 0; t < T; t++) {
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
  if (scaling !== null) {
    const type = scaling["rope_type"] ?? scaling["type"]
    if (type === "linear") factor = scaling["factor"] as number
    else if (type !== "default") throw new Error(`reference: rope type ${String(type)} not implemented`)
  }
  const half = rd / 2
  const cos = new Float64Array(T * half)
  const sin = new Float64Array(T * half)
  for (let i = 0; i < half; i++) {
    const inv = 1 / theta ** ((2 * i) / rd) / factor
    for (let t = 0; t < T; t++) {
      cos[t * half + i] = Math.cos(t * inv)
      sin[t * half + i] = Math.sin(t * inv)
    }
  }
  return { rd, half, cos, sin }
}

/** In place on x [T, heads*hd]: q·cos + rotate_half(q)·sin over the first rd dims of each head. */
function applyRope(x: Float64Array, T: number, heads: number, hd: number, r: ReturnType<typeof ropeTables>): void {
  const { half, cos, sin } = r
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const o = t * heads * hd + h * hd
      for (let i = 0; i < half; i++) {
        const c = cos[t * half + i]!
        const s = sin[t * half + i]!
        const a = x[o + i]!
        const b = x[o + i + half]!
        // rotate_half(x) = [-x2, x1]
        x[o + i] = a * c - b * s
        x[o + i + half] = b * c + a * s
      }
    }
  }
}

export interface ReferenceOptions {
  /** Replaces config.rope_scaling (null: plain RoPE). */
  readonly ropeScaling?: Readonly<Record<string, unknown>> | null
}

/** ln p(tokens[i+1] | tokens[..i]) for i < n−1, in float64. */
export function referenceLogprobs(model: ReferenceModel, tokens: readonly number[], opts: ReferenceOptions = {}): Float64Array {
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
  const rope = ropeTables(c, scaling, hd, T)

  const emb = get("model.embed_tokens.weight")
  let x = new Float64Array(T * D)
  for (let t = 0; t < T; t++) x.set(emb.subarray(tokens[t]! * D, tokens[t]! * D + D), t * D)

  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`
    let wq: Float64Array, wk: Float64Array, wv: Float64Array, wg: Float64Array, wu: Float64Array
    if (arch === "Phi3ForCausalLM") {
      const qkv = get(`${p}self_attn.qkv_proj.weight`)
      wq = qkv.subarray(0, H * hd * D)
      wk = qkv.subarray(H * hd * D, (H + KV) * hd * D)
      wv = qkv.subarray((H + KV) * hd * D, (H + 2 * KV) * hd * D)
      const gu = get(`${p}mlp.gate_up_proj.weight`)
      wg = gu.subarray(0, I * D)
      wu = gu.subarray(I * D, 2 * I * D)
    } else {
      wq = get(`${p}self_attn.q_proj.weight`)
      wk = get(`${p}self_attn.k_proj.weight`)
      wv = get(`${p}self_attn.v_proj.weight`)
      wg = get(`${p}mlp.gate_proj.weight`)
      wu = get(`${p}mlp.up_proj.weight`)
    }
    const bias = (n: string): Float64Array | undefined => (has(p + n) ? get(p + n) : undefined)

    const h = rmsnorm(x, T, D, get(`${p}input_layernorm.weight`), eps)
    const q = linear(h, T, D, wq, H * hd, bias("self_attn.q_proj.bias"))
    const k = linear(h, T, D, wk, KV * hd, bias("self_attn.k_proj.bias"))
    const v = linear(h, T, D, wv, KV * hd, bias("self_attn.v_proj.bias"))
    applyRope(q, T, H, hd, rope)
    applyRope(k, T, KV, hd, rope)

    // Causal softmax attention; head h reads kv head floor(h / (H/KV)) (repeat_kv).
    const att = new Float64Array(T * H * hd)
    const scale = 1 / Math.sqrt(hd)
    const scores = new Float64Array(T)
    for (let hh = 0; hh < H; hh++) {
      const kvh = Math.floor(hh / (H / KV))
      for (let t = 0; t < T; t++) {
        const qo = t * H * hd + hh * hd
        let max = -Infinity
        for (let s = 0; s <= t; s++) {
          const ko = s * KV * hd + kvh * hd
          let dot = 0
          for (let i = 0; i < hd; i++) dot += q[qo + i]! * k[ko + i]!
          scores[s] = dot * scale
          if (scores[s]! > max) max = scores[s]!
        }
        let sum = 0
        for (let s = 0; s <= t; s++) {
          scores[s] = Math.exp(scores[s]! - max)
          sum += scores[s]!
        }
        for (let s = 0; s <= t; s++) {
          const wgt = scores[s]! / sum
          const vo = s * KV * hd + kvh * hd
          for (let i = 0; i < hd; i++) att[qo + i] = att[qo + i]! + wgt * v[vo + i]!
        }
      }
    }
    const o = linear(att, T, H * hd, get(`${p}self_attn.o_proj.weight`), D, bias("self_attn.o_proj.bias"))
    for (let i = 0; i < x.length; i++) x[i] = x[i]! + o[i]!

    const h2 = rmsnorm(x, T, D, get(`${p}post_attention_layernorm.weight`), eps)
    const g = linear(h2, T, D, wg, I, bias("mlp.gate_proj.bias"))
    const u = linear(h2, T, D, wu, I, bias("mlp.up_proj.bias"))
    for (let i = 0; i < g.length; i++) g[i] = (g[i]! / (1 + Math.exp(-g[i]!))) * u[i]!
    const down = linear(g, T, I, get(`${p}mlp.down_proj.weight`), D, bias("mlp.down_proj.bias"))
    const next = new Float64Array(x.length)
    for (let i = 0; i < x.length; i++) next[i] = x[i]! + down[i]!
    x = next
  }

  const hn = rmsnorm(x, T, D, get("model.norm.weight"), eps)
  const head = tied ? emb : get("lm_head.weight")
  const out = new Float64Array(Math.max(0, T - 1))
  const logits = new Float64Array(V)
  for (let t = 0; t < T - 1; t++) {
    let max = -Infinity
    for (let vv = 0; vv < V; vv++) {
      let s = 0
      for (let i = 0; i < D; i++) s += hn[t * D + i]! * head[vv * D + i]!
      logits[vv] = s
      if (s > max) max = s
    }
    let sum = 0
    for (let vv = 0; vv < V; vv++) sum += Math.exp(logits[vv]! - max)
    out[t] = logits[tokens[t + 1]!]! - max - Math.log(sum)
  }
  return out
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
