/**
 * An independent float64 forward + backward of the llama-family training loss, for the tests.
 *
 * Loss = −(1/N)·Σ_t mask_t·ln p(target_t | inputs[0..t]), N = Σ mask_t (HF's mean over non −100 labels;
 * mask_t may be any weight ≥ 0, e.g. answer tokens weighted up).
 * Plain loops over Float64Array, whole sequence at once, every activation kept (tiny models only). RoPE
 * comes straight from the RoPE-table contract (per-layer θ, start tokens n̂ with the original θ and no
 * scale below them, attention scale m on cos and sin) at the given position ids; attention is causal,
 * optionally restricted to the query's own document (`segments`). It shares no code with the GPU path,
 * not even the rope reference: it reads the HF config record and HF-named unfused tensors directly.
 */
import type { RopeTable } from "../../kernels/rope-table.ts"

export type RefTensors = ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float64Array }>

export interface RefBatch {
  readonly inputs: readonly number[]
  readonly targets: readonly number[]
  readonly positions: readonly number[]
  readonly rope: RopeTable
  readonly labelMask?: readonly number[]
  readonly segments?: readonly number[]
}

interface Dims {
  readonly D: number
  readonly H: number
  readonly KV: number
  readonly hd: number
  readonly I: number
  readonly V: number
  readonly L: number
  readonly eps: number
  readonly tied: boolean
}

function dims(c: Readonly<Record<string, unknown>>): Dims {
  const n = (k: string, fallback?: number): number => {
    const v = c[k]
    if (typeof v === "number") return v
    if (fallback !== undefined) return fallback
    throw new Error(`reference backward: config lacks ${k}`)
  }
  const D = n("hidden_size")
  const H = n("num_attention_heads")
  return {
    D, H, KV: n("num_key_value_heads", H), hd: typeof c["head_dim"] === "number" ? (c["head_dim"] as number) : D / H,
    I: n("intermediate_size"), V: n("vocab_size"), L: n("num_hidden_layers"), eps: n("rms_norm_eps"), tied: c["tie_word_embeddings"] === true,
  }
}

// ---- dense helpers ------------------------------------------------------------------------------

/** x [T, K] · W[N, K]ᵀ (+ b) → [T, N]. */
function linear(x: Float64Array, T: number, K: number, w: Float64Array, N: number, b: Float64Array | undefined): Float64Array {
  const y = new Float64Array(T * N)
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < N; o++) {
      let s = b === undefined ? 0 : b[o]!
      for (let i = 0; i < K; i++) s += x[t * K + i]! * w[o * K + i]!
      y[t * N + o] = s
    }
  }
  return y
}

/** dy [T, N] · W [N, K] → [T, K]. */
function backData(dy: Float64Array, T: number, N: number, w: Float64Array, K: number): Float64Array {
  const dx = new Float64Array(T * K)
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < N; o++) {
      const g = dy[t * N + o]!
      if (g === 0) continue
      for (let i = 0; i < K; i++) dx[t * K + i] = dx[t * K + i]! + g * w[o * K + i]!
    }
  }
  return dx
}

/** dW [N, K] += dyᵀ · x; db [N] += Σ_t dy. */
function backWeight(dy: Float64Array, T: number, N: number, x: Float64Array, K: number, dw: Float64Array, db: Float64Array | undefined): void {
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < N; o++) {
      const g = dy[t * N + o]!
      if (db !== undefined) db[o] = db[o]! + g
      for (let i = 0; i < K; i++) dw[o * K + i] = dw[o * K + i]! + g * x[t * K + i]!
    }
  }
}

/** RMSNorm forward; returns y and the per-row 1/rms. */
function rmsnorm(x: Float64Array, T: number, D: number, w: Float64Array, eps: number): { y: Float64Array; r: Float64Array } {
  const y = new Float64Array(T * D)
  const r = new Float64Array(T)
  for (let t = 0; t < T; t++) {
    let ss = 0
    for (let i = 0; i < D; i++) ss += x[t * D + i]! ** 2
    const rt = 1 / Math.sqrt(ss / D + eps)
    r[t] = rt
    for (let i = 0; i < D; i++) y[t * D + i] = w[i]! * x[t * D + i]! * rt
  }
  return { y, r }
}

/** y = w ⊙ x·r, r = (mean x² + eps)^−½: dx = r·w⊙dy − x·r³/D·Σ(dy⊙w⊙x); dw += Σ_t dy⊙x·r. Adds dx into `dxOut`. */
function rmsnormBack(x: Float64Array, r: Float64Array, T: number, D: number, w: Float64Array, dy: Float64Array, dxOut: Float64Array, dw: Float64Array): void {
  for (let t = 0; t < T; t++) {
    const rt = r[t]!
    let dot = 0
    for (let i = 0; i < D; i++) dot += dy[t * D + i]! * w[i]! * x[t * D + i]!
    for (let i = 0; i < D; i++) {
      const xi = x[t * D + i]!
      dw[i] = dw[i]! + dy[t * D + i]! * xi * rt
      dxOut[t * D + i] = dxOut[t * D + i]! + rt * w[i]! * dy[t * D + i]! - (xi * rt ** 3 * dot) / D
    }
  }
}

/** cos/sin [T, half] for one layer at the given positions, from the table contract. */
function ropeAngles(table: RopeTable, layer: number, positions: readonly number[]): { half: number; cos: Float64Array; sin: Float64Array } {
  const half = table.rotaryDim / 2
  const inv = table.invFreq instanceof Float64Array ? table.invFreq : (table.invFreq[layer] ?? table.invFreq[0]!)
  const T = positions.length
  const cos = new Float64Array(T * half)
  const sin = new Float64Array(T * half)
  for (let t = 0; t < T; t++) {
    const n = positions[t]!
    const early = n < table.startTokens
    const m = early ? 1 : table.attentionScale
    for (let i = 0; i < half; i++) {
      const a = n * (early ? table.originalInvFreq[i]! : inv[i]!)
      cos[t * half + i] = m * Math.cos(a)
      sin[t * half + i] = m * Math.sin(a)
    }
  }
  return { half, cos, sin }
}

/** Rotates x [T, heads·hd] in place by +angle (forward) or −angle (`transpose`, the backward). */
function rope(x: Float64Array, T: number, heads: number, hd: number, a: ReturnType<typeof ropeAngles>, transpose: boolean): void {
  const { half, cos, sin } = a
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const o = t * heads * hd + h * hd
      for (let i = 0; i < half; i++) {
        const c = cos[t * half + i]!
        const s = transpose ? -sin[t * half + i]! : sin[t * half + i]!
        const u = x[o + i]!
        const v = x[o + i + half]!
        x[o + i] = u * c - v * s
        x[o + i + half] = v * c + u * s
      }
    }
  }
}

// ---- the model ------------------------------------------------------------------------------------

interface LayerCache {
  x: Float64Array
  r1: Float64Array
  h1: Float64Array
  q: Float64Array
  k: Float64Array
  v: Float64Array
  /** Attention probabilities [H, T, T] (row t, key s ≤ t). */
  p: Float64Array
  o: Float64Array
  x1: Float64Array
  r2: Float64Array
  h2: Float64Array
  g: Float64Array
  u: Float64Array
  m: Float64Array
  angles: ReturnType<typeof ropeAngles>
}

const sigmoid = (z: number): number => 1 / (1 + Math.exp(-z))

export interface ReferenceResult {
  readonly loss: number
  /** ∂loss/∂θ for every tensor, HF names (empty when only the loss was asked for). */
  readonly grads: Map<string, Float64Array>
}

/** The loss alone (for finite differences). */
export function referenceLoss(config: Readonly<Record<string, unknown>>, tensors: RefTensors, batch: RefBatch): number {
  return run(config, tensors, batch, false).loss
}

/** The loss and every parameter's gradient, float64. */
export function referenceLossAndGrad(config: Readonly<Record<string, unknown>>, tensors: RefTensors, batch: RefBatch): ReferenceResult {
  return run(config, tensors, batch, true)
}

function run(config: Readonly<Record<string, unknown>>, tensors: RefTensors, batch: RefBatch, backward: boolean): ReferenceResult {
  const { D, H, KV, hd, I, V, L, eps, tied } = dims(config)
  const get = (name: string): Float64Array => {
    const t = tensors.get(name)
    if (t === undefined) throw new Error(`reference backward: no tensor ${name}`)
    return t.data
  }
  const opt = (name: string): Float64Array | undefined => tensors.get(name)?.data
  const T = batch.inputs.length
  const seg = batch.segments
  const mask = batch.labelMask
  const qd = H * hd
  const kd = KV * hd
  const group = H / KV
  const scale = 1 / Math.sqrt(hd)

  const emb = get("model.embed_tokens.weight")
  let x = new Float64Array(T * D)
  for (let t = 0; t < T; t++) x.set(emb.subarray(batch.inputs[t]! * D, batch.inputs[t]! * D + D), t * D)

  const caches: LayerCache[] = []
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`
    const n1 = rmsnorm(x, T, D, get(`${p}input_layernorm.weight`), eps)
    const q = linear(n1.y, T, D, get(`${p}self_attn.q_proj.weight`), qd, opt(`${p}self_attn.q_proj.bias`))
    const k = linear(n1.y, T, D, get(`${p}self_attn.k_proj.weight`), kd, opt(`${p}self_attn.k_proj.bias`))
    const v = linear(n1.y, T, D, get(`${p}self_attn.v_proj.weight`), kd, opt(`${p}self_attn.v_proj.bias`))
    const angles = ropeAngles(batch.rope, l, batch.positions)
    rope(q, T, H, hd, angles, false)
    rope(k, T, KV, hd, angles, false)
    const prob = new Float64Array(H * T * T)
    const o = new Float64Array(T * qd)
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / group)
      for (let t = 0; t < T; t++) {
        const row = (h * T + t) * T
        let max = -Infinity
        for (let s = 0; s <= t; s++) {
          if (seg !== undefined && seg[s] !== seg[t]) continue
          let dot = 0
          for (let i = 0; i < hd; i++) dot += q[t * qd + h * hd + i]! * k[s * kd + kh * hd + i]!
          prob[row + s] = dot * scale
          max = Math.max(max, dot * scale)
        }
        let sum = 0
        for (let s = 0; s <= t; s++) {
          if (seg !== undefined && seg[s] !== seg[t]) continue
          prob[row + s] = Math.exp(prob[row + s]! - max)
          sum += prob[row + s]!
        }
        for (let s = 0; s <= t; s++) {
          if (seg !== undefined && seg[s] !== seg[t]) continue
          const w = (prob[row + s]! /= sum)
          for (let i = 0; i < hd; i++) o[t * qd + h * hd + i] = o[t * qd + h * hd + i]! + w * v[s * kd + kh * hd + i]!
        }
      }
    }
    const att = linear(o, T, qd, get(`${p}self_attn.o_proj.weight`), D, opt(`${p}self_attn.o_proj.bias`))
    const x1 = new Float64Array(T * D)
    for (let i = 0; i < x1.length; i++) x1[i] = x[i]! + att[i]!
    const n2 = rmsnorm(x1, T, D, get(`${p}post_attention_layernorm.weight`), eps)
    const g = linear(n2.y, T, D, get(`${p}mlp.gate_proj.weight`), I, opt(`${p}mlp.gate_proj.bias`))
    const u = linear(n2.y, T, D, get(`${p}mlp.up_proj.weight`), I, opt(`${p}mlp.up_proj.bias`))
    const m = new Float64Array(T * I)
    for (let i = 0; i < m.length; i++) m[i] = g[i]! * sigmoid(g[i]!) * u[i]!
    const down = linear(m, T, I, get(`${p}mlp.down_proj.weight`), D, opt(`${p}mlp.down_proj.bias`))
    const out = new Float64Array(T * D)
    for (let i = 0; i < out.length; i++) out[i] = x1[i]! + down[i]!
    caches.push({ x, r1: n1.r, h1: n1.y, q, k, v, p: prob, o, x1, r2: n2.r, h2: n2.y, g, u, m, angles })
    x = out
  }

  const nf = rmsnorm(x, T, D, get("model.norm.weight"), eps)
  const headName = tied ? "model.embed_tokens.weight" : "lm_head.weight"
  const head = get(headName)
  const logits = linear(nf.y, T, D, head, V, undefined)
  let scored = 0
  for (let t = 0; t < T; t++) scored += mask === undefined ? 1 : mask[t]!
  let loss = 0
  const dlogits = new Float64Array(T * V)
  for (let t = 0; t < T; t++) {
    const w = mask === undefined ? 1 : mask[t]!
    if (w === 0) continue
    let max = -Infinity
    for (let c = 0; c < V; c++) max = Math.max(max, logits[t * V + c]!)
    let sum = 0
    for (let c = 0; c < V; c++) sum += Math.exp(logits[t * V + c]! - max)
    const lse = max + Math.log(sum)
    loss -= (w * (logits[t * V + batch.targets[t]!]! - lse)) / scored
    for (let c = 0; c < V; c++) dlogits[t * V + c] = (w * Math.exp(logits[t * V + c]! - lse)) / scored
    dlogits[t * V + batch.targets[t]!] = dlogits[t * V + batch.targets[t]!]! - w / scored
  }
  const grads = new Map<string, Float64Array>()
  if (!backward || scored === 0) return { loss: scored === 0 ? 0 : loss, grads }

  for (const [name, t] of tensors) grads.set(name, new Float64Array(t.data.length))
  const G = (name: string): Float64Array => grads.get(name)!
  const Gopt = (name: string): Float64Array | undefined => grads.get(name)

  backWeight(dlogits, T, V, nf.y, D, G(headName), undefined)
  const dhn = backData(dlogits, T, V, head, D)
  let dx = new Float64Array(T * D)
  rmsnormBack(x, nf.r, T, D, get("model.norm.weight"), dhn, dx, G("model.norm.weight"))

  for (let l = L - 1; l >= 0; l--) {
    const p = `model.layers.${l}.`
    const a = caches[l]!
    // MLP
    backWeight(dx, T, D, a.m, I, G(`${p}mlp.down_proj.weight`), Gopt(`${p}mlp.down_proj.bias`))
    const dm = backData(dx, T, D, get(`${p}mlp.down_proj.weight`), I)
    const dg = new Float64Array(T * I)
    const du = new Float64Array(T * I)
    for (let i = 0; i < dm.length; i++) {
      const z = a.g[i]!
      const sg = sigmoid(z)
      du[i] = dm[i]! * z * sg
      dg[i] = dm[i]! * a.u[i]! * sg * (1 + z * (1 - sg))
    }
    backWeight(dg, T, I, a.h2, D, G(`${p}mlp.gate_proj.weight`), Gopt(`${p}mlp.gate_proj.bias`))
    backWeight(du, T, I, a.h2, D, G(`${p}mlp.up_proj.weight`), Gopt(`${p}mlp.up_proj.bias`))
    const dh2 = backData(dg, T, I, get(`${p}mlp.gate_proj.weight`), D)
    const dh2u = backData(du, T, I, get(`${p}mlp.up_proj.weight`), D)
    for (let i = 0; i < dh2.length; i++) dh2[i] = dh2[i]! + dh2u[i]!
    const dx1 = Float64Array.from(dx) // residual path
    rmsnormBack(a.x1, a.r2, T, D, get(`${p}post_attention_layernorm.weight`), dh2, dx1, G(`${p}post_attention_layernorm.weight`))

    // Attention
    backWeight(dx1, T, D, a.o, qd, G(`${p}self_attn.o_proj.weight`), Gopt(`${p}self_attn.o_proj.bias`))
    const dO = backData(dx1, T, D, get(`${p}self_attn.o_proj.weight`), qd)
    const dq = new Float64Array(T * qd)
    const dk = new Float64Array(T * kd)
    const dv = new Float64Array(T * kd)
    const dp = new Float64Array(T)
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / group)
      for (let t = 0; t < T; t++) {
        const row = (h * T + t) * T
        let rowDot = 0
        for (let s = 0; s <= t; s++) {
          const pr = a.p[row + s]!
          if (pr === 0) continue
          let d = 0
          for (let i = 0; i < hd; i++) {
            d += dO[t * qd + h * hd + i]! * a.v[s * kd + kh * hd + i]!
            dv[s * kd + kh * hd + i] = dv[s * kd + kh * hd + i]! + pr * dO[t * qd + h * hd + i]!
          }
          dp[s] = d
          rowDot += pr * d
        }
        for (let s = 0; s <= t; s++) {
          const pr = a.p[row + s]!
          if (pr === 0) continue
          const ds = pr * (dp[s]! - rowDot) * scale
          for (let i = 0; i < hd; i++) {
            dq[t * qd + h * hd + i] = dq[t * qd + h * hd + i]! + ds * a.k[s * kd + kh * hd + i]!
            dk[s * kd + kh * hd + i] = dk[s * kd + kh * hd + i]! + ds * a.q[t * qd + h * hd + i]!
          }
        }
      }
    }
    rope(dq, T, H, hd, a.angles, true)
    rope(dk, T, KV, hd, a.angles, true)
    backWeight(dq, T, qd, a.h1, D, G(`${p}self_attn.q_proj.weight`), Gopt(`${p}self_attn.q_proj.bias`))
    backWeight(dk, T, kd, a.h1, D, G(`${p}self_attn.k_proj.weight`), Gopt(`${p}self_attn.k_proj.bias`))
    backWeight(dv, T, kd, a.h1, D, G(`${p}self_attn.v_proj.weight`), Gopt(`${p}self_attn.v_proj.bias`))
    const dh1 = backData(dq, T, qd, get(`${p}self_attn.q_proj.weight`), D)
    const dh1k = backData(dk, T, kd, get(`${p}self_attn.k_proj.weight`), D)
    const dh1v = backData(dv, T, kd, get(`${p}self_attn.v_proj.weight`), D)
    for (let i = 0; i < dh1.length; i++) dh1[i] = dh1[i]! + dh1k[i]! + dh1v[i]!
    const dxin = Float64Array.from(dx1)
    rmsnormBack(a.x, a.r1, T, D, get(`${p}input_layernorm.weight`), dh1, dxin, G(`${p}input_layernorm.weight`))
    dx = dxin
  }
  const dEmb = G("model.embed_tokens.weight")
  for (let t = 0; t < T; t++) {
    const row = batch.inputs[t]! * D
    for (let i = 0; i < D; i++) dEmb[row + i] = dEmb[row + i]! + dx[t * D + i]!
  }
  return { loss, grads }
}
