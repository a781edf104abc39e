/**
 * Causal flash attention (online softmax, K/V streamed; memory O(T·d), never a T×T buffer) with
 * GQA/MQA over a per-layer KV cache, so long inputs can be processed chunk after chunk.
 *
 * Two variants, chosen by the adapter profile (tests may force one):
 * - "cpu" (llvmpipe): several query rows per invocation (a per-machine choice, kernels/tuning.ts),
 *   fully unrolled with named locals, 4 keys per softmax update, workgroup of 8 (see attention-cpu.wgsl).
 *   K/V are read from texture copies of the window's rows, which llvmpipe loads faster than storage,
 *   except when decoding (too few query rows for the copy to pay); tests force either source.
 * - "gpu": classic FA2, K/V tiles staged in workgroup memory (see attention-gpu.wgsl).
 *
 * The cache itself stays plain storage (later code re-rotates keys in place). A storage binding holds
 * at most 128 MiB and a texture fewer rows than maxTextureDimension2D, so longer caches are attended in
 * windows of rows, one dispatch each, the running (max, sum, unnormalised output) carried between them.
 */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape } from "./tensor.ts"
import { chooseVariant, probeTime } from "./tuning.ts"
import { type Operand, textureOperand } from "./matmul.ts"
import { wgsl } from "./wgsl.ts"

const cpuTemplate = wgsl("./attention-cpu.wgsl", import.meta.url)
const gpuTemplate = wgsl("./attention-gpu.wgsl", import.meta.url)
const mergeSource = wgsl("./attention-merge.wgsl", import.meta.url)

/** Keys/values of one layer for positions 0..capacity-1, storage tensors [capacity, kvHeads*headDim] (kept as plain storage so later code can re-rotate cached keys in place). */
export interface KvCache {
  readonly k: Tensor
  readonly v: Tensor
  readonly capacity: number
  readonly kvHeads: number
  readonly headDim: number
}

export type AttentionVariant = "cpu" | "gpu"

export interface AttentionOptions {
  readonly heads: number
  /** Absolute position of q's row 0; query i attends keys 0..queryOffset+i. */
  readonly queryOffset: number
  /** Softmax scale; defaults to 1/sqrt(headDim). */
  readonly scale?: number
  /** Forces a kernel variant (tests); defaults to the adapter's profile. */
  readonly variant?: AttentionVariant
  /** Cache rows bound per dispatch (a multiple of 64); defaults to what fits a storage binding. Tests force small windows. */
  readonly windowRows?: number
  /** cpu variant only: query rows per invocation instead of the tuned choice (1 for Tq ≤ 8); tests keep compiles short with fewer. */
  readonly rows?: number
  /** cpu variant only: where K/V are read from (default: textures, except when decoding); tests force either. */
  readonly kv?: KvSource
}

export const MAX_HEAD_DIM = 256

function checkHeadDim(op: string, headDim: number): void {
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 4 !== 0 || headDim > MAX_HEAD_DIM) {
    throw new Error(`${op}: headDim ${headDim} must be a multiple of 4 in 4..${MAX_HEAD_DIM}`)
  }
}

export function createKvCache(rt: GpuRuntime, capacity: number, kvHeads: number, headDim: number): KvCache {
  checkHeadDim("createKvCache", headDim)
  if (!Number.isInteger(capacity) || capacity <= 0) throw new Error(`createKvCache: capacity ${capacity} must be a positive integer`)
  if (!Number.isInteger(kvHeads) || kvHeads <= 0) throw new Error(`createKvCache: kvHeads ${kvHeads} must be a positive integer`)
  const width = kvHeads * headDim
  const max = rt.limits.maxBufferSize
  if (capacity * width * 4 > max) {
    throw new Error(`createKvCache: ${capacity} rows of ${width * 4} bytes exceed the buffer size limit of ${max} bytes (at most ${Math.floor(max / (width * 4))} rows)`)
  }
  return { k: rt.tensor([capacity, width]), v: rt.tensor([capacity, width]), capacity, kvHeads, headDim }
}

/** Writes k, v [T, kvHeads*headDim] into rows at..at+T-1. */
export function appendKv(rt: GpuRuntime, cache: KvCache, k: Tensor, v: Tensor, at: number): void {
  const width = cache.kvHeads * cache.headDim
  const t = k.shape[0] ?? 0
  expectShape("appendKv", "k", k, [t, width])
  expectShape("appendKv", "v", v, [t, width])
  if (!Number.isInteger(at) || at < 0 || at + t > cache.capacity) {
    throw new Error(`appendKv: rows ${at}..${at + t - 1} do not fit a cache of capacity ${cache.capacity}`)
  }
  if (t === 0) return
  const bytes = t * width * 4
  rt.copy(k.buffer, 0, cache.k.buffer, at * width * 4, bytes)
  rt.copy(v.buffer, 0, cache.v.buffer, at * width * 4, bytes)
}

export function releaseKvCache(rt: GpuRuntime, cache: KvCache): void {
  rt.release(cache.k, cache.v)
}

/**
 * Query rows per invocation of the cpu variant, the candidates timed per machine (kernels/tuning.ts; the
 * first is the default). Each K/V component loaded feeds this many rows, so more is faster until the
 * rows' state (2·rows·headDim floats per lane) spills out of L1, whose size differs between CPUs; the
 * unrolled code grows as rows·headDim and llvmpipe's cold compile faster still (Mesa's disk cache makes
 * later runs instant). Measured on an Intel Sapphire Rapids (H=4, T=2048–4096, GFLOP/s, cold compile):
 * d=64: 8 rows 33 (4 s), 12 rows 41 (7.6 s), 16 rows 47 (12 s); d=96: 5 rows 23 (5 s), 10 rows 35 (14 s);
 * d=128: 4 rows 18.6 (7 s), 8 rows 15 (22 s). Every choice gives the same result: rows only decide which
 * queries share an invocation, and keys past a query are exact no-ops in its online softmax.
 */
export function cpuRowCandidates(headDim: number): readonly number[] {
  if (headDim <= 32) return [16, 8]
  if (headDim <= 64) return [16, 8, 12]
  if (headDim <= 96) return [10, 5]
  if (headDim <= 128) return [4, 8]
  return [2]
}

/** Query rows bucketed to a power of two (≥ 64) for the tuning key. */
const queryBucket = (tq: number): number => 2 ** Math.max(6, Math.ceil(Math.log2(Math.max(1, tq))))

/** The tuned rows per invocation for this head shape and chunk length. */
function rowsFor(rt: GpuRuntime, heads: number, kvHeads: number, headDim: number, tq: number): number {
  const tb = queryBucket(tq)
  const name = chooseVariant(rt, {
    op: "attention-cpu",
    shape: `d${headDim} h${heads}/${kvHeads} q${tb}`,
    candidates: cpuRowCandidates(headDim).map((r) => `r${r}`),
    probe: (rt2, c) => probeRows(rt2, heads, kvHeads, headDim, tb, Number(c.slice(1))),
  })
  return Number(name.slice(1))
}

/** ms per call of the cpu variant with `rows` rows per invocation, tq queries over as many keys (the tuner's probe). */
async function probeRows(rt: GpuRuntime, heads: number, kvHeads: number, headDim: number, tq: number, rows: number): Promise<number> {
  const rand = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => ((i * 2654435761) % 2001) / 1000 - 1)
  const cache = createKvCache(rt, tq, kvHeads, headDim)
  const q = rt.upload(rand(tq * heads * headDim), [tq, heads * headDim])
  rt.write(cache.k, rand(tq * kvHeads * headDim))
  rt.write(cache.v, rand(tq * kvHeads * headDim))
  try {
    return await probeTime(rt, () => rt.release(attention(rt, q, cache, { heads, queryOffset: 0, variant: "cpu", rows })))
  } finally {
    rt.release(q)
    releaseKvCache(rt, cache)
  }
}

/**
 * Cache rows one storage binding can hold (maxStorageBufferBindingSize, 128 MiB on llvmpipe), rounded
 * down to a multiple of 64 so each window's byte offset is 256-aligned. Longer prefixes take several
 * dispatches; the cache itself is one buffer, so its bound is maxBufferSize (2 GiB here).
 */
export function maxWindowRows(rt: GpuRuntime, kvHeads: number, headDim: number): number {
  const rows = Math.floor(rt.limits.maxStorageBufferBindingSize / (kvHeads * headDim * 4) / 64) * 64
  if (rows < 64) throw new Error(`attention: a cache row of ${kvHeads * headDim * 4} bytes is too wide for a storage binding`)
  return rows
}

/** Cache rows per window when K/V go through textures (at most maxTextureDimension2D − 1 rows, a multiple of 64). */
export const textureWindowRows = (rt: GpuRuntime): number => Math.floor((rt.limits.maxTextureDimension2D - 65) / 64) * 64

/** Keys per workgroup-memory tile of the gpu variant: K and V tiles together within 32 KiB. */
export const gpuTileKeys = (headDim: number): number => Math.min(64, Math.floor(4096 / headDim / 4) * 4)

const setConst = (src: string, name: string, value: number): string => {
  const line = new RegExp(`const ${name}: u32 = 0u; *//% ${name}`)
  if (!line.test(src)) throw new Error(`attention template: constant ${name} not found`)
  return src.replace(line, `const ${name}: u32 = ${value}u;`)
}

const setBlock = (src: string, name: string, code: readonly string[]): string => {
  const line = new RegExp(`^( *)//% ${name}$`, "m")
  const m = line.exec(src)
  if (m === null) throw new Error(`attention template: section ${name} not found`)
  const indent = m[1] ?? ""
  return src.replace(line, code.map((l) => indent + l).join("\n"))
}

/** Where the cpu variant reads K and V from: the cache's storage, or a texture copy of the window's rows. */
export type KvSource = "texture" | "buffer"

/** The cpu variant specialised to headDim/4 = d4 and `rows` queries per invocation, unrolled. */
export function cpuSource(d4: number, rows: number, from: KvSource = "buffer"): string {
  const R = [...Array(rows).keys()]
  const C = [...Array(d4).keys()]
  const U = [0, 1, 2, 3]
  const loadQ: string[] = []
  for (const t of R) {
    loadQ.push(`let qi${t} = q0 + lid.x + ${8 * t}u;`)
    loadQ.push(`let qp${t} = P.queryOffset + qi${t};`)
    loadQ.push(`let qb${t} = min(qi${t}, P.tq - 1u) * P.qStride + qCol;`)
    loadQ.push(`let o${t} = qi${t} * P.qStride + qCol;`)
    for (const c of C) loadQ.push(`let q${t}_${c} = Q[qb${t} + ${c}u] * P.scale;`)
    loadQ.push(`var m${t} = NEG;`, `var l${t} = 0.0;`)
    for (const c of C) loadQ.push(`var a${t}_${c} = vec4f(0.0);`)
  }
  const block: string[] = []
  for (const t of R) for (const u of U) block.push(`var s${t}_${u} = 0.0;`)
  // Scores: each K component loaded feeds ROWS dot products.
  for (const c of C) {
    for (const u of U) block.push(`let k${u}_${c} = ldK(r${u}, kvCol + ${c}u);`)
    for (const t of R) for (const u of U) block.push(`s${t}_${u} += dot(q${t}_${c}, k${u}_${c});`)
  }
  for (const t of R) {
    for (const u of U) block.push(`let x${t}_${u} = select(s${t}_${u}, NEG, j + ${u}u > qp${t});`)
    block.push(`let mn${t} = max(m${t}, max(max(x${t}_0, x${t}_1), max(x${t}_2, x${t}_3)));`)
    block.push(`let al${t} = exp2(m${t} - mn${t});`)
    for (const u of U) block.push(`let p${t}_${u} = exp2(x${t}_${u} - mn${t});`)
    block.push(`l${t} = l${t} * al${t} + ((p${t}_0 + p${t}_1) + (p${t}_2 + p${t}_3));`)
    block.push(`m${t} = mn${t};`)
  }
  // Values: each V component loaded feeds ROWS accumulators.
  for (const c of C) {
    for (const u of U) block.push(`let v${u}_${c} = ldV(r${u}, kvCol + ${c}u);`)
    for (const t of R) {
      block.push(`a${t}_${c} = a${t}_${c} * al${t} + p${t}_0 * v0_${c} + p${t}_1 * v1_${c} + p${t}_2 * v2_${c} + p${t}_3 * v3_${c};`)
    }
  }
  const store: string[] = []
  // Last window (or the only one): normalise. Otherwise leave the window's unnormalised output and
  // (max, sum) for attention-merge.wgsl. (Merging here, in the unrolled kernel, doubled its compile.)
  for (const t of R) {
    store.push(`if (qi${t} < P.tq) {`, `  let r${t} = select(1.0, 1.0 / l${t}, P.last == 1u);`)
    store.push(`  if (P.last == 0u) { ML[qi${t} * heads + h] = vec2f(m${t}, l${t}); }`)
    for (const c of C) store.push(`  O[o${t} + ${c}u] = a${t}_${c} * r${t};`)
    store.push(`}`)
  }
  const stream = (["K", "V"] as const).flatMap((x, i) =>
    from === "texture"
      ? [`@group(0) @binding(${2 + i}) var ${x}tex: texture_2d<f32>;`, `fn ld${x}(r: u32, c: u32) -> vec4f { return textureLoad(${x}tex, vec2u(c, r), 0); }`]
      : [`fn ld${x}(r: u32, c: u32) -> vec4f { return ${x}[r * P.kvStride + c]; }`],
  )
  let src = setBlock(cpuTemplate, "STREAM", stream)
  src = setConst(src, "D4", d4)
  src = setConst(src, "ROWS", rows)
  src = setBlock(src, "LOAD_Q", loadQ)
  src = setBlock(src, "BLOCK", block)
  return setBlock(src, "STORE", store)
}

export function gpuSource(d4: number, tileKeys: number): string {
  return setConst(setConst(gpuTemplate, "D4", d4), "BK", tileKeys)
}

function merge(rt: GpuRuntime, out: Tensor, ml: Tensor, part: Tensor, partMl: Tensor, n: number, d4: number, last: boolean): void {
  const groups = Math.ceil(n / 256)
  const gx = Math.min(groups, rt.limits.maxComputeWorkgroupsPerDimension)
  const params = uniforms([
    ["u32", n],
    ["u32", d4],
    ["u32", last ? 1 : 0],
    ["u32", gx],
  ])
  rt.dispatch(rt.pipeline("attention-merge", mergeSource), [out, ml, part, partMl], [gx, Math.ceil(groups / gx)], params)
}

const sources = new Map<string, string>()
function source(key: string, make: () => string): string {
  let s = sources.get(key)
  if (s === undefined) sources.set(key, (s = make()))
  return s
}

/** Causal attention of q [Tq, heads*headDim] (absolute positions queryOffset..queryOffset+Tq-1) over cached keys 0..queryOffset+i for query i. Returns [Tq, heads*headDim]. */
export function attention(rt: GpuRuntime, q: Tensor, cache: KvCache, opts: AttentionOptions): Tensor {
  const { heads, queryOffset } = opts
  const { kvHeads, headDim } = cache
  const tq = q.shape[0] ?? 0
  expectShape("attention", "q", q, [tq, heads * headDim])
  if (!Number.isInteger(heads) || heads <= 0 || heads % kvHeads !== 0) {
    throw new Error(`attention: heads ${heads} must be a positive multiple of the cache's kvHeads ${kvHeads}`)
  }
  if (!Number.isInteger(queryOffset) || queryOffset < 0 || queryOffset + tq > cache.capacity) {
    throw new Error(`attention: queries at positions ${queryOffset}..${queryOffset + tq - 1} exceed the cache capacity ${cache.capacity}`)
  }
  const out = rt.tensor([tq, heads * headDim])
  if (tq === 0) return out
  const keys = queryOffset + tq
  const rowBytes = kvHeads * headDim * 4
  const d4 = headDim / 4
  const scale = (opts.scale ?? 1 / Math.sqrt(headDim)) * Math.LOG2E
  const windowRows = opts.windowRows ?? Math.min(maxWindowRows(rt, kvHeads, headDim), textureWindowRows(rt))
  if (!Number.isInteger(windowRows) || windowRows <= 0 || windowRows % 64 !== 0) {
    throw new Error(`attention: windowRows ${windowRows} must be a positive multiple of 64`)
  }
  const variant = opts.variant ?? rt.adapter.profile
  let pipeline: GPUComputePipeline
  let perGroup: number
  let from: KvSource = "buffer"
  if (variant === "cpu") {
    // Decoding (a few query rows): one row per invocation, else each lane would run 16 rows' work for one.
    const rows = opts.rows ?? (tq <= 8 ? 1 : rowsFor(rt, heads, kvHeads, headDim, tq))
    if (!Number.isInteger(rows) || rows < 1 || rows > 32) throw new Error(`attention: rows ${rows} must be an integer in 1..32`)
    perGroup = 8 * rows
    // K/V from texture copies of the window's rows, which llvmpipe loads faster than storage, unless a
    // window is taller than a texture; decoding reads too few rows per key for the copy to pay.
    from = opts.kv ?? (tq > 8 && windowRows <= textureWindowRows(rt) ? "texture" : "buffer")
    const key = `attention-cpu-d${headDim}-r${rows}${from === "texture" ? "-tex" : ""}`
    pipeline = rt.pipeline(key, source(key, () => cpuSource(d4, rows, from)))
  } else {
    const bk = gpuTileKeys(headDim)
    perGroup = 64
    const key = `attention-gpu-d${headDim}-k${bk}`
    pipeline = rt.pipeline(key, source(key, () => gpuSource(d4, bk)))
  }
  // One dispatch per window of cache rows: one in all unless the attended prefix exceeds a storage
  // binding (the binding covers only rows in use). Later windows go to a scratch output and are
  // merged into `out` by attention-merge.wgsl.
  const windows = Math.ceil(keys / windowRows)
  const ml = rt.tensor(windows > 1 ? [tq * heads, 2] : [4])
  const part = windows > 1 ? rt.tensor([tq, heads * headDim]) : undefined
  const partMl = windows > 1 ? rt.tensor([tq * heads, 2]) : undefined
  for (let w = 0; w < windows; w++) {
    const kStart = w * windowRows
    const kStop = Math.min(keys, kStart + windowRows)
    const params = uniforms([
      ["u32", tq],
      ["u32", queryOffset],
      ["u32", heads / kvHeads],
      ["u32", heads * d4],
      ["u32", kvHeads * d4],
      ["f32", scale],
      ["u32", kStart],
      ["u32", kStop],
      ["u32", windows === 1 ? 1 : 0],
    ])
    const range = { offset: kStart * rowBytes, size: (kStop - kStart) * rowBytes }
    const dst = w === 0 || part === undefined || partMl === undefined ? { o: out, ml } : { o: part, ml: partMl }
    const width = kvHeads * headDim
    const [ks, vs] = [cache.k, cache.v].map((t): Operand =>
      from === "texture"
        ? textureOperand(rt, t, kStop - kStart, width, width, kStart * width, kStop - kStart)
        : { binding: { buffer: t.buffer, ...range }, ld4: 0, release: () => {} },
    ) as [Operand, Operand]
    rt.dispatch(pipeline, [q, ks.binding, vs.binding, dst.o, dst.ml], [Math.ceil(tq / perGroup), heads], params)
    ks.release()
    vs.release()
    if (w > 0 && part !== undefined && partMl !== undefined) merge(rt, out, ml, part, partMl, tq * heads, d4, w === windows - 1)
  }
  rt.release(ml, part, partMl)
  return out
}
