/** Table cases of causal attention over the KV cache (inference), both kernels, chunk after chunk. */
import { type AttentionVariant, type KvSource, appendKv, attention, createKvCache, releaseKvCache } from "../../attention.ts"
import { attentionRef } from "../../attention.ref.ts"
import type { AdapterProfile } from "../../runtime.ts"
import type { Tensor } from "../../tensor.ts"
import { type KernelCase, type KernelOp, type Variant, expectShapeOf, launcher, once } from "../kernel-case.ts"
import { rand } from "../random.ts"

export interface AttentionKernelVariant extends Variant {
  readonly kernel: AttentionVariant
}

export const ATTENTION_VARIANTS: readonly AttentionKernelVariant[] = [
  { name: "cpu kernel", kernel: "cpu" },
  { name: "gpu kernel", kernel: "gpu" },
]

/** The variant `attention` picks by default on an adapter of this profile. */
export const defaultAttentionVariant = (profile: AdapterProfile): AttentionKernelVariant => ATTENTION_VARIANTS[profile === "cpu" ? 0 : 1]!

// f32 kernels against the float64 reference: outputs are convex combinations of V rows in [-1, 1], and
// f32 rounding of scores, exp2 and the running sums stays near 1e-7; 1e-5 leaves room for that.
const ATTENTION_TOL = 1e-5

export interface AttentionParams {
  readonly heads: number
  readonly kvHeads: number
  readonly headDim: number
  /** Total sequence length. */
  readonly t: number
  /** Query rows per call; the sequence goes through the cache chunk after chunk (default: one chunk). */
  readonly chunks?: readonly number[]
  readonly scale?: number
  /** Multiplies q, for large logits. */
  readonly qGain?: number
  /** Cache rows per binding window (forces the long-cache path at small sizes). */
  readonly windowRows?: number
  /** cpu kernel: query rows per invocation (default: the tuned choice; with tuning off, the first candidate). Fewer keep cold compiles short. */
  readonly rows?: number
  /** cpu kernel: K/V from texture copies or the cache's storage (default: the kernel's choice). */
  readonly kv?: KvSource
  /** Cases with this key must give the same bits (another rows or K/V source, the same sums). */
  readonly sameBits?: string
  /** The reference's scale where it should differ from the kernel's (to show a mismatch is caught). */
  readonly refScale?: number
  /** Cache rows past the sequence, filled with 1e30: rows past a query's causal limit must not count (default 9). */
  readonly spareRows?: number
  readonly seed?: number
  readonly slow?: boolean
}

/** The case's q [t, heads·headDim], k and v [t, kvHeads·headDim] (benches compare their own baselines on them). */
export function attentionInputs(p: AttentionParams): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const seed = p.seed ?? 1
  return {
    q: rand(p.t * p.heads * p.headDim, seed, p.qGain ?? 1),
    k: rand(p.t * p.kvHeads * p.headDim, seed + 1),
    v: rand(p.t * p.kvHeads * p.headDim, seed + 2),
  }
}

export function attentionCase(p: AttentionParams): KernelCase<AttentionKernelVariant> {
  const { heads, kvHeads, headDim: d, t } = p
  const chunks = p.chunks ?? [t]
  if (chunks.reduce((a, b) => a + b, 0) !== t) throw new Error(`attentionCase: chunks ${chunks.join("+")} do not add up to ${t}`)
  const host = once(() => attentionInputs(p))
  const parts = [
    heads === kvHeads ? `MHA ${heads}` : `${kvHeads === 1 ? "MQA" : "GQA"} ${heads}:${kvHeads}`,
    `head_dim ${d}`,
    `T ${t}`,
    chunks.length > 1 ? `chunks ${chunks.join("+")}` : "",
    p.windowRows !== undefined ? `windows of ${p.windowRows} rows` : "",
    p.scale !== undefined ? `scale ${p.scale}` : "",
    p.qGain !== undefined ? `q×${p.qGain}` : "",
    p.rows !== undefined ? `${p.rows} rows per invocation (cpu kernel)` : "",
    p.kv !== undefined ? `K/V from ${p.kv === "texture" ? "textures" : "storage"} (cpu kernel)` : "",
    p.refScale !== undefined ? `reference scale ${p.refScale}` : "",
  ]
  return {
    name: parts.filter((s) => s !== "").join(", "),
    dtype: "f32",
    ...(p.slow === true ? { slow: true } : {}),
    ...(p.sameBits !== undefined ? { sameBits: p.sameBits } : {}),
    setup(rt, v) {
      const { q, k, v: vals } = host()
      const capacity = t + (p.spareRows ?? 9)
      const cache = createKvCache(rt, capacity, kvHeads, d)
      if (capacity > t) {
        const junk = rt.upload(new Float32Array(capacity * kvHeads * d).fill(1e30), [capacity, kvHeads * d])
        appendKv(rt, cache, junk, junk, 0)
        rt.release(junk)
      }
      // Each chunk's keys and values go in at its offset now, so `run` times attention alone; a
      // query of an early chunk must ignore the later rows as it ignores the junk.
      const qs: Tensor[] = []
      let at = 0
      for (const n of chunks) {
        qs.push(rt.upload(q.subarray(at * heads * d, (at + n) * heads * d), [n, heads * d]))
        const kt = rt.upload(k.subarray(at * kvHeads * d, (at + n) * kvHeads * d), [n, kvHeads * d])
        const vt = rt.upload(vals.subarray(at * kvHeads * d, (at + n) * kvHeads * d), [n, kvHeads * d])
        appendKv(rt, cache, kt, vt, at)
        rt.release(kt, vt)
        at += n
      }
      const opts = {
        heads,
        variant: v.kernel,
        ...(p.scale !== undefined ? { scale: p.scale } : {}),
        ...(p.rows !== undefined ? { rows: p.rows } : {}),
        ...(p.kv !== undefined ? { kv: p.kv } : {}),
        ...(p.windowRows !== undefined ? { windowRows: p.windowRows } : {}),
      }
      const run = () => {
        const outs: Record<string, Tensor> = {}
        let queryOffset = 0
        chunks.forEach((n, i) => {
          outs[`chunk ${i}`] = expectShapeOf("attention", "output", attention(rt, qs[i]!, cache, { ...opts, queryOffset }), [n, heads * d])
          queryOffset += n
        })
        return outs
      }
      // The chunks' outputs, back to back: one [t, heads·headDim] output.
      const view = (got: Readonly<Record<string, Float32Array>>) => {
        const o = new Float32Array(t * heads * d)
        chunks.forEach((n, i) => o.set(got[`chunk ${i}`]!, chunks.slice(0, i).reduce((a, b) => a + b, 0) * heads * d))
        return { o }
      }
      return launcher(rt, qs, run, { view, cleanup: () => releaseKvCache(rt, cache) })
    },
    expected: once(() => {
      const { q, k, v } = host()
      const scale = p.refScale ?? p.scale
      const want = attentionRef(q, k, v, { tq: t, tk: t, heads, kvHeads, headDim: d, queryOffset: 0, ...(scale !== undefined ? { scale } : {}) })
      return { o: { want, tol: { abs: ATTENTION_TOL }, shape: [t, heads * d] } }
    }),
  }
}

// The first call of a cpu-kernel shape compiles an unrolled kernel in llvmpipe, ~12 s cold for the
// production head_dim 64 one (16 rows per invocation). To keep a cold CI run short, the production
// choices are tested at head_dim 32 (16 rows for 37- and 85-row chunks) and 16 (1 row when decoding),
// the wider heads with fewer rows from the same generator.
export const attentionOp: KernelOp<AttentionKernelVariant> = {
  op: "attention",
  variants: () => ATTENTION_VARIANTS,
  cases: () => [
    attentionCase({ heads: 2, kvHeads: 2, headDim: 64, t: 130, rows: 4 }),
    attentionCase({ heads: 2, kvHeads: 2, headDim: 64, t: 130, chunks: [1, 64, 65], rows: 4, seed: 5 }),
    attentionCase({ heads: 4, kvHeads: 2, headDim: 32, t: 130, chunks: [37, 1, 7, 85] }),
    // Token-by-token decoding (1 row per invocation) after a prompt of 7.
    attentionCase({ heads: 3, kvHeads: 1, headDim: 16, t: 12, chunks: [7, 1, 1, 1, 1, 1] }),
    attentionCase({ heads: 4, kvHeads: 2, headDim: 32, t: 200, chunks: [100, 100], windowRows: 64 }),
    attentionCase({ heads: 4, kvHeads: 2, headDim: 32, t: 130, chunks: [1, 129], windowRows: 128, seed: 9 }),
    // Every rows-per-invocation and K/V source sums the same way: the same bits, windows or not.
    ...([["buffer", undefined], ["texture", undefined], ["buffer", 8], ["texture", 8]] as const).flatMap(([kv, rows]) => [
      attentionCase({ heads: 4, kvHeads: 2, headDim: 32, t: 200, chunks: [100, 100], windowRows: 64, seed: 3, kv, ...(rows === undefined ? {} : { rows }), sameBits: "windows of 64 rows" }),
      attentionCase({ heads: 4, kvHeads: 2, headDim: 32, t: 200, chunks: [100, 100], seed: 3, kv, ...(rows === undefined ? {} : { rows }), sameBits: "one window" }),
    ]),
    attentionCase({ heads: 2, kvHeads: 1, headDim: 96, t: 37, rows: 2 }),
    attentionCase({ heads: 2, kvHeads: 2, headDim: 128, t: 77, chunks: [70, 7], scale: 0.3, qGain: 2, rows: 1 }),
    attentionCase({ heads: 1, kvHeads: 1, headDim: 16, t: 7, scale: 0.5, rows: 2 }),
  ],
  references: [
    {
      name: "attentionRef: rows a..t-1 at queryOffset a equal the same rows of the whole pass",
      run() {
        const [t, a, heads, kvHeads, d] = [11, 4, 4, 2, 8]
        const q = rand(t * heads * d, 3), k = rand(t * kvHeads * d, 4), v = rand(t * kvHeads * d, 5)
        const whole = attentionRef(q, k, v, { tq: t, tk: t, heads, kvHeads, headDim: d, queryOffset: 0 })
        const tail = attentionRef(q.subarray(a * heads * d), k, v, { tq: t - a, tk: t, heads, kvHeads, headDim: d, queryOffset: a })
        return { tail: { got: tail, want: whole.subarray(a * heads * d), tol: { abs: 1e-15 } } }
      },
    },
  ],
}
