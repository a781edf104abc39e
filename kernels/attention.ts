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
 * The cache itself stays plain storage (later code re-rotates keys in place), and is paged: each layer's
 * keys and values live in pages of `pageRows` rows, separate buffers allocated as rows are appended, so
 * the longest context is bounded by memory, not by one buffer's or one binding's size. Attention takes one
 * dispatch per window of rows (a page, or a texture's worth of it), the running (max, sum, unnormalised
 * output) carried from one to the next. Pages hold f32, or f16 / bf16 (half the memory; rows are rounded
 * to nearest-even as appended, pack16.wgsl) widened into an f32 scratch page before they are attended.
 */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { packHalf, unpackHalf } from "./pack16.ts"
import { type Half, type Tensor, expectShape } from "./tensor.ts"
import { chooseVariant, probeTime, settleTuning, sizeBucket } from "./tuning.ts"
import { releaseFreedHostMemory } from "./host-memory.ts"
import { type Operand, textureOperand } from "./matmul.ts"
import { wgsl } from "./wgsl.ts"

const paramsWgsl = wgsl("./attention-params.wgsl", import.meta.url).trimEnd().split("\n")
const cpuTemplate = wgsl("./attention-cpu.wgsl", import.meta.url)
const gpuTemplate = wgsl("./attention-gpu.wgsl", import.meta.url)

/** Rows pageRows·p … pageRows·(p+1)−1 of a layer's keys and values, [pageRows, kvHeads·headDim] in the cache's dtype. */
export interface KvPage {
  readonly k: GPUBuffer
  readonly v: GPUBuffer
}

/**
 * Keys/values of one layer for positions 0..capacity-1, in pages of `pageRows` rows allocated as rows are
 * appended (plain storage, so later code can re-rotate cached keys in place).
 */
export interface KvCache {
  readonly capacity: number
  readonly kvHeads: number
  readonly headDim: number
  /** f32, or 16-bit rows (two values a u32 word). */
  readonly dtype: "f32" | Half
  readonly pageRows: number
  /** The pages allocated so far, in order. */
  readonly pages: KvPage[]
}

export interface KvCacheOptions {
  /** Element type of the cached rows; default f32. */
  readonly dtype?: "f32" | Half
  /**
   * Rows per page; default `defaultPageRows`: the capacity, up to 128 MiB of f32 rows. A size asked for is
   * cut to the capacity and rounded up to a multiple of `pageQuantum` (the key tile of the attention kernel
   * the adapter's profile runs), so that page boundaries never change the order of its sums.
   */
  readonly pageRows?: number
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

/** Bytes of one cached value. */
const valueBytes = (dtype: "f32" | Half): number => (dtype === "f32" ? 4 : 2)

/** Bytes a default page's f32 rows fill at most: WebGPU's default maxStorageBufferBindingSize, the same on every device so memory plans can say it. */
export const PAGE_BYTES = 2 ** 27

/**
 * Rows every page is a multiple of for the attention kernel `variant`, so that a sequence attended page
 * by page gives the bits it gives in one page: the gpu kernel updates its running softmax once per tile of
 * keys (a tile cut by a page end would be summed in another order), the cpu kernel once per 4 keys.
 * Both divide 64, which default pages are multiples of.
 */
export const pageQuantum = (variant: AttentionVariant, headDim: number): number => (variant === "gpu" ? gpuTileKeys(headDim) : 4)

/** The default rows per page for a cache of `capacity` rows: all of them (rounded up to 64), up to PAGE_BYTES of f32 rows. */
export function defaultPageRows(capacity: number, kvHeads: number, headDim: number): number {
  return Math.max(64, Math.min(Math.ceil(capacity / 64) * 64, Math.floor(PAGE_BYTES / (kvHeads * headDim * 4) / 64) * 64))
}

export function createKvCache(rt: GpuRuntime, capacity: number, kvHeads: number, headDim: number, options: KvCacheOptions = {}): KvCache {
  checkHeadDim("createKvCache", headDim)
  if (!Number.isInteger(capacity) || capacity <= 0) throw new Error(`createKvCache: capacity ${capacity} must be a positive integer`)
  if (!Number.isInteger(kvHeads) || kvHeads <= 0) throw new Error(`createKvCache: kvHeads ${kvHeads} must be a positive integer`)
  const asked = options.pageRows
  if (asked !== undefined && (!Number.isInteger(asked) || asked < 1)) throw new Error(`createKvCache: pageRows ${asked} must be a positive integer`)
  const quantum = pageQuantum(rt.adapter.profile, headDim)
  const pageRows = asked === undefined ? defaultPageRows(capacity, kvHeads, headDim) : Math.ceil(Math.min(asked, capacity) / quantum) * quantum
  // an f32 page, or the f32 scratch a 16-bit page is widened into, is bound whole
  if (pageRows * kvHeads * headDim * 4 > rt.limits.maxStorageBufferBindingSize) {
    throw new Error(`createKvCache: pages of ${pageRows} rows exceed one storage binding (at most ${maxPageRows(rt, kvHeads, headDim)} rows)`)
  }
  return { capacity, kvHeads, headDim, dtype: options.dtype ?? "f32", pageRows, pages: [] }
}

/** Bytes of one page's K (or V). */
export const kvPageBytes = (cache: Pick<KvCache, "pageRows" | "kvHeads" | "headDim" | "dtype">): number => cache.pageRows * cache.kvHeads * cache.headDim * valueBytes(cache.dtype)

/** The page holding row `row`, allocated (with those before it) if it is not yet. */
function pageFor(rt: GpuRuntime, cache: KvCache, row: number): KvPage {
  const p = Math.floor(row / cache.pageRows)
  while (cache.pages.length <= p) cache.pages.push({ k: rt.allocBuffer(kvPageBytes(cache)), v: rt.allocBuffer(kvPageBytes(cache)) })
  return cache.pages[p]!
}

/** Writes k, v [T, kvHeads*headDim] (f32) into rows at..at+T-1, rounded to the cache's dtype. */
export function appendKv(rt: GpuRuntime, cache: KvCache, k: Tensor, v: Tensor, at: number): void {
  const width = cache.kvHeads * cache.headDim
  const t = k.shape[0] ?? 0
  expectShape("appendKv", "k", k, [t, width])
  expectShape("appendKv", "v", v, [t, width])
  if (!Number.isInteger(at) || at < 0 || at + t > cache.capacity) {
    throw new Error(`appendKv: rows ${at}..${at + t - 1} do not fit a cache of capacity ${cache.capacity}`)
  }
  // page by page: a chunk may start in one page and end in another
  for (let r = at; r < at + t; ) {
    const page = pageFor(rt, cache, r)
    const inPage = r % cache.pageRows
    const rows = Math.min(at + t - r, cache.pageRows - inPage)
    if (cache.dtype === "f32") {
      rt.copy(k.buffer, (r - at) * width * 4, page.k, inPage * width * 4, rows * width * 4)
      rt.copy(v.buffer, (r - at) * width * 4, page.v, inPage * width * 4, rows * width * 4)
    } else {
      const o = { values: rows * width, srcWord: ((r - at) * width) / 2, dstWord: (inPage * width) / 2 }
      packHalf(rt, k, page.k, cache.dtype, o)
      packHalf(rt, v, page.v, cache.dtype, o)
    }
    r += rows
  }
}

export function releaseKvCache(rt: GpuRuntime, cache: KvCache): void {
  for (const p of cache.pages.splice(0)) {
    rt.releaseBuffer(p.k)
    rt.releaseBuffer(p.v)
  }
}

/**
 * Rows from..from+rows−1 of one page's keys (or values) as f32: the page itself (f32) or `scratch` widened
 * from it (16-bit). Later code re-rotating keys writes back with `storeKvRows`.
 */
export function kvRows(rt: GpuRuntime, cache: KvCache, page: GPUBuffer, rows: number, scratch: Tensor | undefined): { readonly buffer: GPUBuffer; readonly size: number } {
  const width = cache.kvHeads * cache.headDim
  if (cache.dtype === "f32") return { buffer: page, size: rows * width * 4 }
  if (scratch === undefined) throw new Error("kvRows: a 16-bit cache needs a scratch page")
  unpackHalf(rt, page, cache.dtype, { values: rows * width, dst: scratch })
  return { buffer: scratch.buffer, size: rows * width * 4 }
}

/** Rows of an f32 scratch page written back into a 16-bit page (rounded again), or nothing for an f32 page (changed in place). */
export function storeKvRows(rt: GpuRuntime, cache: KvCache, page: GPUBuffer, rows: number, scratch: Tensor | undefined): void {
  if (cache.dtype === "f32" || scratch === undefined) return
  packHalf(rt, scratch, page, cache.dtype, { values: rows * cache.kvHeads * cache.headDim })
}

/** An f32 page to widen a 16-bit page into (undefined for an f32 cache: its pages are read in place). Release it after use. */
export const kvScratch = (rt: GpuRuntime, cache: KvCache): Tensor | undefined =>
  cache.dtype === "f32" ? undefined : rt.tensor([cache.pageRows, cache.kvHeads * cache.headDim])

/**
 * Query rows per invocation of the cpu variant, the candidates timed per machine (kernels/tuning.ts; the
 * first is the default). Each K/V component loaded feeds this many rows, so more is faster until the
 * rows' state (2·rows·headDim floats per lane) spills out of L1, whose size differs between CPUs; the
 * unrolled code grows as rows·headDim and llvmpipe's cold compile faster still (Mesa's disk cache makes
 * later runs instant). Measured on an Intel Sapphire Rapids (H=4, T=2048–4096, GFLOP/s, cold compile):
 * d=64: 8 rows 33 (4 s), 12 rows 41 (7.6 s), 16 rows 47 (12 s); d=96: 5 rows 23 (5 s), 10 rows 35 (14 s);
 * d=128: 4 rows 18.6 (7 s), 8 rows 15 (22 s). On an AMD EPYC (AVX2, LLVM 15; H=9/3 at d=64, 4/2 at d=32,
 * T=2048) the compiles are far slower (prepareAttention) and more rows still pay: d=64: 16 rows 31.5, 12
 * rows 27.0, 8 rows 24.5, 6 rows 21.3, 4 rows 16.4; d=32: 16 rows 31.7, 8 rows 24.5. A long context is
 * mostly attention, so the once-per-machine compile is worth it. Every choice gives the same result: rows
 * only decide which queries share an invocation, and keys past a query are exact no-ops in its online softmax.
 */
export function cpuRowCandidates(headDim: number): readonly number[] {
  if (headDim <= 32) return [16, 8]
  if (headDim <= 64) return [16, 8, 12]
  if (headDim <= 96) return [10, 5]
  if (headDim <= 128) return [4, 8]
  return [2]
}


/** The tuned rows per invocation for this head shape and chunk length. */
function rowsFor(rt: GpuRuntime, heads: number, kvHeads: number, headDim: number, tq: number): number {
  const tb = sizeBucket(tq, 64)
  const name = chooseVariant(rt, {
    op: "attention-cpu",
    shape: `d${headDim} h${heads}/${kvHeads} q${tb}`,
    candidates: cpuRowCandidates(headDim).map((r) => `r${r}`),
    probe: (rt2, c) => probeRows(rt2, heads, kvHeads, headDim, tb, Number(c.slice(1))),
  })
  return Number(name.slice(1))
}

/**
 * Compiles the cpu variant that chunks of `chunk` queries will run with this head shape (timing the
 * candidates first where this machine has not), on one workgroup's operands, then hands the compiler's
 * freed memory back to the system (kernels/host-memory.ts); other profiles have nothing to prepare. The
 * first compile of the unrolled kernel on a machine is LLVM's largest by far: at d 64 (AMD EPYC, OpenGL ES
 * llvmpipe, cold cache) 4 rows take 21 s and 0.2 GiB of host memory, 8 rows 70 s and 0.5 GiB, 12 rows
 * 163 s and 1.0 GiB, 16 rows 297 s and 1.7 GiB. Models call this before loading their weights, so that
 * memory is never held beside them.
 */
export async function prepareAttention(rt: GpuRuntime, heads: number, kvHeads: number, headDim: number, chunk: number): Promise<void> {
  if (rt.adapter.profile !== "cpu" || chunk <= 8) return
  checkHeadDim("prepareAttention", headDim)
  rowsFor(rt, heads, kvHeads, headDim, chunk) // a shape new to this machine is queued for timing
  await settleTuning(rt)
  const rows = rowsFor(rt, heads, kvHeads, headDim, chunk)
  await withOperands(rt, heads, kvHeads, headDim, 8 * rows, async (q, cache) => {
    rt.release(attention(rt, q, cache, { heads, queryOffset: 0, rows }))
    await rt.sync()
  })
  await releaseFreedHostMemory()
}

/** ms per call of the cpu variant with `rows` rows per invocation, tq queries over as many keys (the tuner's probe). */
const probeRows = (rt: GpuRuntime, heads: number, kvHeads: number, headDim: number, tq: number, rows: number): Promise<number> =>
  withOperands(rt, heads, kvHeads, headDim, tq, (q, cache) =>
    probeTime(rt, () => rt.release(attention(rt, q, cache, { heads, queryOffset: 0, variant: "cpu", rows }))))

/** Runs `use` on n query rows over a cache of n rows (fixed pseudo-random values), then frees them. */
async function withOperands<T>(rt: GpuRuntime, heads: number, kvHeads: number, headDim: number, n: number, use: (q: Tensor, cache: KvCache) => Promise<T>): Promise<T> {
  const rand = (count: number): Float32Array => Float32Array.from({ length: count }, (_, i) => ((i * 2654435761) % 2001) / 1000 - 1)
  const cache = createKvCache(rt, n, kvHeads, headDim)
  const q = rt.upload(rand(n * heads * headDim), [n, heads * headDim])
  const kv = rt.upload(rand(n * kvHeads * headDim), [n, kvHeads * headDim])
  appendKv(rt, cache, kv, kv, 0)
  try {
    return await use(q, cache)
  } finally {
    rt.release(q, kv)
    releaseKvCache(rt, cache)
  }
}

/**
 * Cache rows one storage binding can hold (maxStorageBufferBindingSize, 128 MiB on llvmpipe), rounded down
 * to a multiple of 64: the most rows a page may have (a page, or the f32 scratch a 16-bit page is widened
 * into, is bound whole).
 */
function maxPageRows(rt: GpuRuntime, kvHeads: number, headDim: number): number {
  const rows = Math.floor(rt.limits.maxStorageBufferBindingSize / (kvHeads * headDim * 4) / 64) * 64
  if (rows < 64) throw new Error(`attention: a cache row of ${kvHeads * headDim * 4} bytes is too wide for a storage binding`)
  return rows
}

/** Cache rows per window when K/V go through textures (at most maxTextureDimension2D − 1 rows, a multiple of 64). */
export const textureWindowRows = (maxTextureDimension2D: number): number => Math.floor((maxTextureDimension2D - 65) / 64) * 64

/** Keys per workgroup-memory tile of the gpu variant: K and V tiles together within 32 KiB, a power of two up to 64 (so it divides every default page). */
export const gpuTileKeys = (headDim: number): number => Math.min(64, 2 ** Math.floor(Math.log2(4096 / headDim)))

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
    // a later page continues the running state the page before left (unnormalised output, max, sum)
    loadQ.push(`if (P.first == 0u && qi${t} < P.tq) {`, `  let st${t} = ML[qi${t} * heads + h];`, `  m${t} = st${t}.x;`, `  l${t} = st${t}.y;`)
    for (const c of C) loadQ.push(`  a${t}_${c} = O[o${t} + ${c}u];`)
    loadQ.push(`}`)
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
  // Last page (or the only one): normalise. Otherwise leave the unnormalised output and (max, sum) for the
  // next page's dispatch to continue from.
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
  let src = setBlock(setBlock(cpuTemplate, "PARAMS", paramsWgsl), "STREAM", stream)
  src = setConst(src, "D4", d4)
  src = setConst(src, "ROWS", rows)
  src = setBlock(src, "LOAD_Q", loadQ)
  src = setBlock(src, "BLOCK", block)
  return setBlock(src, "STORE", store)
}

export function gpuSource(d4: number, tileKeys: number): string {
  return setConst(setConst(setBlock(gpuTemplate, "PARAMS", paramsWgsl), "D4", d4), "BK", tileKeys)
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
  if (cache.pages.length * cache.pageRows < keys) throw new Error(`attention: the cache holds ${cache.pages.length * cache.pageRows} rows' pages; keys up to ${keys} were asked for (append them first)`)
  const d4 = headDim / 4
  const scale = (opts.scale ?? 1 / Math.sqrt(headDim)) * Math.LOG2E
  const { pipeline, perGroup, from } = attentionKernel(rt, opts, tq, kvHeads, headDim)
  // One dispatch per window of rows: a page (the binding covers only rows in use), or for texture copies
  // a texture's worth of it. Each continues the running softmax state the one before left in `out` and
  // `ml`: the same arithmetic, in the same order, as one pass over all keys, so paging changes no bit
  // (pages are whole tiles of the kernel: see pageQuantum; a cache made for the cpu kernel and attended by
  // the gpu one, as tests force, agrees within f32 rounding). A 16-bit page is widened into an f32 scratch
  // page first.
  const step = from === "texture" ? Math.min(cache.pageRows, textureWindowRows(rt.limits.maxTextureDimension2D)) : cache.pageRows
  const width = kvHeads * headDim
  const windows = attentionWindows(cache.pageRows, keys, step)
  const ml = rt.tensor(windows.length > 1 ? [tq * heads, 2] : [4])
  const scratchK = kvScratch(rt, cache)
  const scratchV = kvScratch(rt, cache)
  let widened = -1
  let kRows: Tensor | undefined, vRows: Tensor | undefined
  windows.forEach(({ page, kStart, kStop }, w) => {
    if (page !== widened) {
      // this page's rows in use as f32 (the page itself, or the scratch it is widened into)
      const rows = Math.min(keys, (page + 1) * cache.pageRows) - page * cache.pageRows
      const asTensor = (b: { readonly buffer: GPUBuffer }): Tensor => ({ buffer: b.buffer, shape: [rows, width], dtype: "f32" })
      kRows = asTensor(kvRows(rt, cache, cache.pages[page]!.k, rows, scratchK))
      vRows = asTensor(kvRows(rt, cache, cache.pages[page]!.v, rows, scratchV))
      widened = page
    }
    const params = uniforms([
      ["u32", tq],
      ["u32", queryOffset],
      ["u32", heads / kvHeads],
      ["u32", heads * d4],
      ["u32", kvHeads * d4],
      ["f32", scale],
      ["u32", kStart],
      ["u32", kStop],
      ["u32", w === windows.length - 1 ? 1 : 0],
      ["u32", w === 0 ? 1 : 0],
    ])
    const first = kStart - page * cache.pageRows
    const [ks, vs] = [kRows!, vRows!].map((t): Operand =>
      from === "texture"
        ? textureOperand(rt, t, kStop - kStart, width, width, first * width, kStop - kStart)
        : { binding: { buffer: t.buffer, offset: first * width * 4, size: (kStop - kStart) * width * 4 }, ld4: 0, release: () => {} },
    ) as [Operand, Operand]
    rt.dispatch(pipeline, [q, ks.binding, vs.binding, out, ml], [Math.ceil(tq / perGroup), heads], params)
    ks.release()
    vs.release()
  })
  rt.release(ml, scratchK, scratchV)
  return out
}

/** The kernel for this call: the variant asked for (default: the adapter's profile), its pipeline, query rows per workgroup and K/V source. */
function attentionKernel(rt: GpuRuntime, opts: AttentionOptions, tq: number, kvHeads: number, headDim: number): { pipeline: GPUComputePipeline; perGroup: number; from: KvSource } {
  const d4 = headDim / 4
  const variant = opts.variant ?? rt.adapter.profile
  if (variant === "cpu") {
    // Decoding (a few query rows): one row per invocation, else each lane would run 16 rows' work for one.
    const rows = opts.rows ?? (tq <= 8 ? 1 : rowsFor(rt, opts.heads, kvHeads, headDim, tq))
    if (!Number.isInteger(rows) || rows < 1 || rows > 32) throw new Error(`attention: rows ${rows} must be an integer in 1..32`)
    // K/V from texture copies of a window's rows, which llvmpipe loads faster than storage (a page taller
    // than a texture is attended in several windows); decoding reads too few rows per key for the copy to pay.
    const from = opts.kv ?? (tq > 8 ? "texture" : "buffer")
    const key = `attention-cpu-d${headDim}-r${rows}${from === "texture" ? "-tex" : ""}`
    return { pipeline: rt.pipeline(key, source(key, () => cpuSource(d4, rows, from))), perGroup: 8 * rows, from }
  }
  const bk = gpuTileKeys(headDim)
  const key = `attention-gpu-d${headDim}-k${bk}`
  return { pipeline: rt.pipeline(key, source(key, () => gpuSource(d4, bk))), perGroup: 64, from: "buffer" }
}

/** Keys 0..keys-1 cut into windows of at most `step` rows, none crossing a page. */
export function attentionWindows(pageRows: number, keys: number, step: number): { readonly page: number; readonly kStart: number; readonly kStop: number }[] {
  const windows: { readonly page: number; readonly kStart: number; readonly kStop: number }[] = []
  for (let p = 0; p * pageRows < keys; p++) {
    const pageStop = Math.min(keys, (p + 1) * pageRows)
    for (let k0 = p * pageRows; k0 < pageStop; k0 += step) windows.push({ page: p, kStart: k0, kStop: Math.min(pageStop, k0 + step) })
  }
  return windows
}
