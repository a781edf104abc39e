import { describe, expect, test } from "bun:test"
import { type AttentionVariant, type KvSource, appendKv, attention, createKvCache, releaseKvCache } from "../../kernels/attention.ts"
import { attentionRef } from "../../kernels/attention.ref.ts"
import { gpu } from "../gpu-shared.ts"

// f32 kernels against the float64 reference: outputs are convex combinations of V rows in [-1, 1],
// and f32 rounding of scores, exp2 and the running sums stays near 1e-7; 1e-5 leaves room for that.
const TOL = 1e-5

/** Deterministic values in [-1, 1) (mulberry32), so a failure reproduces. */
function randoms(n: number, seed: number): Float32Array {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1
  }
  return out
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!)
    if (!(d <= m)) m = d // NaN counts as a failure
  }
  return m
}

interface Case {
  readonly heads: number
  readonly kvHeads: number
  readonly headDim: number
  /** Total sequence length. */
  readonly t: number
  /** Query rows per call; the sequence is processed chunk after chunk through the cache. */
  readonly chunks?: readonly number[]
  readonly scale?: number
  /** Multiplies q, for large logits. */
  readonly qGain?: number
  /** Cache rows per binding window (forces the long-cache path at small sizes). */
  readonly windowRows?: number
  /** cpu variant: query rows per invocation (default: the tuned choice; with tuning off, the first of cpuRowCandidates). */
  readonly rows?: number
  /** cpu variant: K/V from textures or storage (default: the kernel's choice). */
  readonly kv?: KvSource
  /** The reference's scale when it should differ from the kernel's (to show a mismatch is caught). */
  readonly refScale?: number
}

/** Runs the case through the KV cache in chunks; returns the max error against one float64 whole-sequence pass. */
async function check(variant: AttentionVariant, c: Case, seed = 1): Promise<number> {
  const { got, want } = await outputs(variant, c, seed)
  return maxAbsDiff(got, want)
}

/** The kernel's output over the chunks, and the float64 whole-sequence reference. */
async function outputs(variant: AttentionVariant, c: Case, seed: number): Promise<{ got: Float32Array; want: Float64Array }> {
  const rt = await gpu()
  const { heads, kvHeads, headDim: d, t } = c
  const chunks = c.chunks ?? [t]
  expect(chunks.reduce((a, b) => a + b, 0)).toBe(t)
  const q = randoms(t * heads * d, seed).map((x) => x * (c.qGain ?? 1))
  const k = randoms(t * kvHeads * d, seed + 1)
  const v = randoms(t * kvHeads * d, seed + 2)
  const want = attentionRef(q, k, v, { tq: t, tk: t, heads, kvHeads, headDim: d, queryOffset: 0, ...(c.scale !== undefined ? { scale: c.refScale ?? c.scale } : {}) })

  // Capacity beyond the sequence, filled with junk: rows past a query's causal limit must not count.
  const capacity = t + 9
  const cache = createKvCache(rt, capacity, kvHeads, d)
  const junk = rt.upload(new Float32Array(capacity * kvHeads * d).fill(1e30), [capacity, kvHeads * d])
  appendKv(rt, cache, junk, junk, 0)
  rt.release(junk)

  const got = new Float32Array(t * heads * d)
  let at = 0
  for (const n of chunks) {
    const qt = rt.upload(q.subarray(at * heads * d, (at + n) * heads * d), [n, heads * d])
    const kt = rt.upload(k.subarray(at * kvHeads * d, (at + n) * kvHeads * d), [n, kvHeads * d])
    const vt = rt.upload(v.subarray(at * kvHeads * d, (at + n) * kvHeads * d), [n, kvHeads * d])
    appendKv(rt, cache, kt, vt, at)
    const out = attention(rt, qt, cache, {
      heads,
      queryOffset: at,
      variant,
      ...(c.scale !== undefined ? { scale: c.scale } : {}),
      ...(c.rows !== undefined ? { rows: c.rows } : {}),
      ...(c.kv !== undefined ? { kv: c.kv } : {}),
      ...(c.windowRows !== undefined ? { windowRows: c.windowRows } : {}),
    })
    expect(out.shape).toEqual([n, heads * d])
    got.set(await rt.read(out), at * heads * d)
    rt.release(qt, kt, vt, out)
    at += n
  }
  releaseKvCache(rt, cache)
  return { got, want }
}

// The first call of a cpu-variant shape compiles an unrolled kernel in llvmpipe, ~12 s cold for the
// production head_dim 64 one (16 rows per invocation). To keep a cold CI run short, the production
// choices are tested at head_dim 32 (16 rows for 37- and 85-row chunks) and 16 (1 row when decoding),
// the wider heads with fewer rows from the same generator.
const COLD = 60_000

for (const variant of ["cpu", "gpu"] as const) {
  describe(`attention (${variant} variant)`, () => {
    test("MHA, head_dim 64, 130 rows in one pass, then in chunks of 1, 64, 65", async () => {
      expect(await check(variant, { heads: 2, kvHeads: 2, headDim: 64, t: 130, rows: 4 })).toBeLessThan(TOL)
      expect(await check(variant, { heads: 2, kvHeads: 2, headDim: 64, t: 130, chunks: [1, 64, 65], rows: 4 }, 5)).toBeLessThan(TOL)
    }, COLD)
    test("GQA 4:2, head_dim 32 (production rows), chunks of 37, 1, 7, 85 match one whole-sequence pass", async () => {
      expect(await check(variant, { heads: 4, kvHeads: 2, headDim: 32, t: 130, chunks: [37, 1, 7, 85] })).toBeLessThan(TOL)
    }, COLD)
    test("MQA 3:1, head_dim 16 (production rows), token-by-token decoding (1 row per invocation) after a prompt of 7", async () => {
      expect(await check(variant, { heads: 3, kvHeads: 1, headDim: 16, t: 12, chunks: [7, 1, 1, 1, 1, 1] })).toBeLessThan(TOL)
    }, COLD)
    test("K/V from storage or textures, any rows per invocation, windows or not: the same bits", async () => {
      const c: Case = { heads: 4, kvHeads: 2, headDim: 32, t: 200, chunks: [100, 100], windowRows: 64 }
      const bits = async (x: Partial<Case>): Promise<Uint32Array> => new Uint32Array((await outputs(variant, { ...c, ...x }, 3)).got.buffer)
      const want = await bits({ kv: "buffer" })
      for (const x of [{ kv: "texture" }, { kv: "buffer", rows: 8 }, { kv: "texture", rows: 8 }] as const) expect(await bits(x)).toEqual(want)
    }, COLD)
    test("long-cache path: keys bound in windows of 64 rows, GQA 4:2, chunks of 100 and 100", async () => {
      expect(await check(variant, { heads: 4, kvHeads: 2, headDim: 32, t: 200, chunks: [100, 100], windowRows: 64 })).toBeLessThan(TOL)
      expect(await check(variant, { heads: 4, kvHeads: 2, headDim: 32, t: 130, chunks: [1, 129], windowRows: 128 }, 9)).toBeLessThan(TOL)
    }, COLD)
    test("head_dim 96 (Phi-3), GQA 2:1, 37 rows", async () => {
      expect(await check(variant, { heads: 2, kvHeads: 1, headDim: 96, t: 37, rows: 2 })).toBeLessThan(TOL)
    }, COLD)
    test("head_dim 128, chunks of 70 and 7, explicit scale, large logits", async () => {
      expect(await check(variant, { heads: 2, kvHeads: 2, headDim: 128, t: 77, chunks: [70, 7], scale: 0.3, qGain: 2, rows: 1 })).toBeLessThan(TOL)
    }, COLD)
  })
}

describe("attention: API and memory", () => {
  test("reference: rows a..t-1 at queryOffset a equal the same rows of the whole pass", () => {
    const [t, a, heads, kvHeads, d] = [11, 4, 4, 2, 8]
    const q = randoms(t * heads * d, 3)
    const k = randoms(t * kvHeads * d, 4)
    const v = randoms(t * kvHeads * d, 5)
    const whole = attentionRef(q, k, v, { tq: t, tk: t, heads, kvHeads, headDim: d, queryOffset: 0 })
    const tail = attentionRef(q.subarray(a * heads * d), k, v, { tq: t - a, tk: t, heads, kvHeads, headDim: d, queryOffset: a })
    expect(maxAbsDiff(tail, whole.subarray(a * heads * d))).toBeLessThan(1e-15)
  })


  test("the comparison can fail: the kernel at scale 0.5 against a default-scale reference", async () => {
    expect(await check("cpu", { heads: 1, kvHeads: 1, headDim: 16, t: 7, scale: 0.5, rows: 2 })).toBeLessThan(TOL)
    expect(await check("cpu", { heads: 1, kvHeads: 1, headDim: 16, t: 7, scale: 0.5, rows: 2, refScale: 0.25 })).toBeGreaterThan(100 * TOL)
  })

  test("no T×T buffer: the call allocates only its output", async () => {
    const rt = await gpu()
    const t = 512
    const heads = 2
    const d = 16
    const cache = createKvCache(rt, t, 1, d)
    const q = rt.upload(randoms(t * heads * d, 7), [t, heads * d])
    await rt.sync()
    rt.resetPeak()
    const before = rt.stats.liveBytes
    const out = attention(rt, q, cache, { heads, queryOffset: 0, variant: "cpu", rows: 2 })
    await rt.sync()
    // T² f32 scores would be 1 MiB; the output is 64 KiB, and K and V go through texture copies of the
    // cache, their rows padded to 64 floats by a repack first (128 KiB each; the textures have a spare
    // texel column and row).
    const padded = t * 64 * 4
    const texture = (t + 1) * (64 / 4 + 1) * 16
    expect(rt.stats.peakBytes - before).toBeLessThanOrEqual(t * heads * d * 4 + 2 * (padded + texture))
    rt.release(q, out)
    releaseKvCache(rt, cache)
  })

  test("rejects what it cannot compute", async () => {
    const rt = await gpu()
    expect(() => createKvCache(rt, 8, 1, 18)).toThrow(/multiple of 4/)
    expect(() => createKvCache(rt, 8, 1, 260)).toThrow(/multiple of 4/)
    const cache = createKvCache(rt, 8, 2, 16)
    const q = rt.tensor([4, 3 * 16])
    expect(() => attention(rt, q, cache, { heads: 3, queryOffset: 0 })).toThrow(/multiple of the cache's kvHeads/)
    const q4 = rt.tensor([4, 4 * 16])
    expect(() => attention(rt, q4, cache, { heads: 4, queryOffset: 5 })).toThrow(/capacity/)
    const k = rt.tensor([4, 32])
    expect(() => appendKv(rt, cache, k, k, 6)).toThrow(/capacity/)
    expect(() => appendKv(rt, cache, q4, q4, 0)).toThrow(/shape/)
    const q2 = rt.tensor([4, 2 * 16])
    expect(() => attention(rt, q2, cache, { heads: 2, queryOffset: 0, windowRows: 100 })).toThrow(/multiple of 64/)
    expect(() => createKvCache(rt, 2 ** 26, 8, 128)).toThrow(/buffer size limit/)
    rt.release(q2)
    rt.release(q, q4, k)
    releaseKvCache(rt, cache)
  })
})
