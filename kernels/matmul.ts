/**
 * Matmul kernels: `linear` (y = x·Wᵀ + b, the model's hot path) and a general `matmul` (NN, NT, TN).
 *
 * Variants per adapter profile (override with `setMatmulVariant` or the `variant` option):
 * - "cpu" (llvmpipe): big register blocks, no workgroup memory (matmul-cpu.wgsl). Weights live in
 *   rgba32float textures and x is copied into one per call, the fastest operand path measured there;
 *   a weight taller than the texture limit along K falls back to a storage buffer (16×16 block), and
 *   `matmul` (operands that change every call) reads storage buffers.
 * - "gpu": workgroup-memory tiling (matmul-tiled.wgsl), weights in storage buffers.
 * Weights are stored transposed, Wᵀ [K, N], zero-padded (K to 4, N to the cpu kernel's 16-column block),
 * so every path is an NN product with vec4 loads along N and no edge cases along N; a weight wider than
 * one texture or binding is split into column parts.
 */
import { type GpuRuntime, uniforms } from "./runtime.ts"
import { type Tensor, expectShape, numel, shapeString } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const cpuSrc = wgsl("./matmul-cpu.wgsl", import.meta.url)
const repackSrc = wgsl("./matmul-repack.wgsl", import.meta.url)
const addSrc = wgsl("./matmul-add.wgsl", import.meta.url)
const tiledSrc = wgsl("./matmul-tiled.wgsl", import.meta.url)
const unpadSrc = wgsl("./matmul-unpad.wgsl", import.meta.url)

export type MatmulVariant = "cpu" | "gpu"

let forcedVariant: MatmulVariant | undefined

/** Forces a kernel variant for every later call (tests use it to cover both); `undefined` = by adapter. */
export function setMatmulVariant(v: MatmulVariant | undefined): void {
  forcedVariant = v
}

const variantOf = (rt: GpuRuntime, v: MatmulVariant | undefined): MatmulVariant => v ?? forcedVariant ?? rt.adapter.profile

interface WeightPart {
  /** First output column (row of W) of this part, and how many it holds. */
  readonly n0: number
  readonly cols: number
  /** Width in vec4s (texels), a multiple of 4: rows are zero-padded to 16 columns. */
  readonly c4: number
  readonly texture?: GPUTexture
  readonly view?: GPUTextureView
  readonly tensor?: Tensor
}

/** A linear layer's weight W [N, K] (HF layout [out_features, in_features]) prepared for this adapter (texture or storage). */
export interface Weight {
  readonly shape: readonly [number, number]
  readonly storage: "texture" | "buffer"
  /** K rounded up to a multiple of 4: the rows of Wᵀ as stored. */
  readonly kPadded: number
  readonly parts: readonly WeightPart[]
}

export interface PrepareWeightOptions {
  readonly variant?: MatmulVariant
  /** Default: texture for the "cpu" variant when K fits the texture limit, else buffer. */
  readonly storage?: "texture" | "buffer"
  /** Most columns per part (a multiple of 16); default: as many as the texture or binding limit allows. */
  readonly partCols?: number
}

const ceil4 = (v: number): number => Math.ceil(v / 4) * 4
/** Columns of C are computed in whole blocks of 16 by the cpu kernel. */
const ceil16 = (v: number): number => Math.ceil(v / 16) * 16

export function prepareWeight(rt: GpuRuntime, data: Float32Array, n: number, k: number, opts: PrepareWeightOptions = {}): Weight {
  if (!(n > 0 && k > 0 && Number.isInteger(n) && Number.isInteger(k))) throw new Error(`prepareWeight: bad shape [${n}×${k}]`)
  if (data.length !== n * k) throw new Error(`prepareWeight: ${data.length} values do not fill [${n}×${k}]`)
  const kp = ceil4(k)
  const maxTex = rt.limits.maxTextureDimension2D
  const textureFits = kp + 1 <= maxTex // + a spare row, see below
  const storage = opts.storage ?? (variantOf(rt, opts.variant) === "cpu" && textureFits ? "texture" : "buffer")
  if (storage === "texture" && !textureFits) throw new Error(`prepareWeight: K=${k} exceeds the texture limit ${maxTex}`)
  const maxBytes = Math.min(rt.limits.maxStorageBufferBindingSize, rt.limits.maxBufferSize)
  const limitCols = Math.floor((storage === "texture" ? 4 * (maxTex - 1) : maxBytes / (kp * 4)) / 16) * 16
  const partCols = Math.min(limitCols, opts.partCols ?? limitCols)
  if (partCols < 16 || partCols % 16 !== 0) throw new Error(`prepareWeight: part width ${partCols} must be a positive multiple of 16`)
  const parts: WeightPart[] = []
  rt.flush() // queue writes bypass the batch order
  for (let n0 = 0; n0 < n; n0 += partCols) {
    const cols = Math.min(partCols, n - n0)
    const width = ceil16(cols)
    const c4 = width / 4
    if (storage === "texture") {
      // llvmpipe compiles a shader variant per texture state, which includes whether each dimension is a
      // power of two: one spare texel column / row when it is keeps every weight on the same variant.
      const texW = c4 + (isPow2(c4) ? 1 : 0)
      const texH = kp + (isPow2(kp) ? 1 : 0)
      const texture = rt.createTexture({
        label: `weight ${n}×${k} part ${n0}`,
        size: [texW, texH],
        format: "rgba32float",
        usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
      })
      const host = transposedPart(data, k, n0, cols, texW * 4, texH)
      rt.device.queue.writeTexture({ texture }, host, { bytesPerRow: texW * 16, rowsPerImage: texH }, [texW, texH])
      parts.push({ n0, cols, c4, texture, view: texture.createView() })
    } else {
      parts.push({ n0, cols, c4, tensor: rt.upload(transposedPart(data, k, n0, cols, width, kp), [kp, width]) })
    }
  }
  return { shape: [n, k], storage, kPadded: kp, parts }
}

const isPow2 = (v: number): boolean => (v & (v - 1)) === 0

/** Rows of Wᵀ for columns n0 … n0+cols: out[r·width + c] = W[n0 + c][r]; the padding stays zero. */
function transposedPart(data: Float32Array, k: number, n0: number, cols: number, width: number, rows: number): Float32Array {
  const out = new Float32Array(width * rows)
  for (let c = 0; c < cols; c++) {
    const src = (n0 + c) * k
    for (let r = 0; r < k; r++) out[r * width + c] = data[src + r]!
  }
  return out
}

/** Frees a weight. Work already recorded that reads it is submitted first (a destroyed texture fails at submit). */
export function releaseWeight(rt: GpuRuntime, w: Weight): void {
  if (w.storage === "texture") rt.flush()
  for (const part of w.parts) {
    if (part.texture !== undefined) rt.destroyTexture(part.texture)
    if (part.tensor !== undefined) rt.release(part.tensor)
  }
}

// ---- kernels ------------------------------------------------------------------------------------

/**
 * The llvmpipe kernel's variants (rows × 16 columns per invocation). With both operands in textures,
 * bigger blocks keep paying: at 1024³, 64×16 ran ~59 GFLOP/s against ~49 for 32×16 (2 cores; x from
 * storage instead: ~40), for 2.5 s of cold LLVM compile instead of 0.9 (128×16: 10 s). Storage operands
 * peak at 16×16. Few rows (decode, short inputs) would waste most of a 64-row block, so M ≤ 16 gets 8
 * rows (and reads x from storage: it is tiny).
 */
interface CpuVariant {
  readonly name: string
  readonly TM: number
  readonly WX: number
  readonly WY: number
  readonly aFrom: "texture" | "buffer"
  readonly bFrom: "texture" | "buffer"
}
const CPU_TEXTURE: CpuVariant = { name: "tex", TM: 64, WX: 8, WY: 1, aFrom: "texture", bFrom: "texture" }
const CPU_TEXTURE_FEW_ROWS: CpuVariant = { name: "tex-few", TM: 8, WX: 8, WY: 1, aFrom: "buffer", bFrom: "texture" }
const CPU_STORAGE: CpuVariant = { name: "buf", TM: 16, WX: 8, WY: 2, aFrom: "buffer", bFrom: "buffer" }
const FEW_ROWS = 16

const cpuVariant = (bFrom: "texture" | "buffer", m: number): CpuVariant =>
  bFrom === "buffer" ? CPU_STORAGE : m <= FEW_ROWS ? CPU_TEXTURE_FEW_ROWS : CPU_TEXTURE

/**
 * Specializes a .wgsl template: `$NAME` becomes its constant, then a line naming {i}, {j} or {q}
 * repeats for every i < TM, j < TN4 (default 4), q < 4 (q outermost, j innermost), with {Q} = "xyzw"[q].
 * This writes the unrolled register block as named locals, which is what llvmpipe needs.
 */
export function expandTemplate(template: string, consts: Readonly<Record<string, string | number>>): string {
  const sub = template.replace(/\$([A-Z][A-Z0-9_]*)/g, (whole, name: string) => {
    const v = consts[name]
    if (v === undefined) throw new Error(`expandTemplate: no value for ${whole}`)
    return String(v)
  })
  const count = { q: 4, i: Number(consts.TM ?? 1), j: Number(consts.TN4 ?? 4) }
  const out: string[] = []
  for (const line of sub.split("\n")) {
    if (!/\{[qQij]\}/.test(line)) {
      out.push(line)
      continue
    }
    const qs = /\{[qQ]\}/.test(line) ? count.q : 1
    const is = line.includes("{i}") ? count.i : 1
    const js = line.includes("{j}") ? count.j : 1
    for (let q = 0; q < qs; q++)
      for (let i = 0; i < is; i++)
        for (let j = 0; j < js; j++)
          out.push(line.replaceAll("{q}", String(q)).replaceAll("{Q}", "xyzw"[q]!).replaceAll("{i}", String(i)).replaceAll("{j}", String(j)))
  }
  return out.join("\n")
}

/** Compiled on first use. */
function cpuPipeline(rt: GpuRuntime, v: CpuVariant): GPUComputePipeline {
  const a =
    v.aFrom === "texture"
      ? { A_DECL: "@group(0) @binding(1) var a: texture_2d<f32>;", A_LOAD: "textureLoad(a, vec2u(k4, rowBase), 0)" }
      : { A_DECL: "@group(0) @binding(1) var<storage, read> a: array<vec4f>;", A_LOAD: "a[rowBase + k4]" }
  const b =
    v.bFrom === "texture"
      ? { B_DECL: "@group(0) @binding(2) var b: texture_2d<f32>;", B_LOAD: "textureLoad(b, vec2u(col4, row), 0)" }
      : { B_DECL: "@group(0) @binding(2) var<storage, read> b: array<vec4f>;", B_LOAD: "b[row * p.ldb + col4]" }
  const code = expandTemplate(cpuSrc, { TM: v.TM, WX: v.WX, WY: v.WY, ...a, ...b })
  return rt.pipeline(`matmul-cpu-${v.name}`, code)
}

const xTextures = new WeakMap<GpuRuntime, Map<string, GPUTexture[]>>()
const X_TEXTURE_SIZES = 8

/**
 * x rows r0 … r0+rows as an rgba32float texture [K/4 texels, rows], through a buffer → texture copy
 * (rows padded to 64 floats, the copy's 256-byte row alignment, by a repack when x's are not).
 * Textures are pooled by size; sizes are rounded (and kept off powers of two, which llvmpipe compiles
 * separate shader variants for) so a run needs only a few. Release with `releaseXTexture`.
 */
function xTexture(rt: GpuRuntime, x: Tensor, k: number, r0: number, rows: number, totalRows: number): GPUTexture {
  const kw = Math.ceil(k / 64) * 64
  const width = kw / 4 + 1
  const height = Math.ceil(rows / 64) * 64 + 1
  const key = `${width}x${height}`
  let pool = xTextures.get(rt)
  if (pool === undefined) xTextures.set(rt, (pool = new Map()))
  let texture = pool.get(key)?.pop()
  if (texture === undefined) {
    if (pool.size >= X_TEXTURE_SIZES) {
      rt.flush() // recorded work may still read them
      for (const list of pool.values()) for (const t of list) rt.destroyTexture(t)
      pool.clear()
    }
    texture = rt.createTexture({
      label: `matmul x ${key}`,
      size: [width, height],
      format: "rgba32float",
      usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
    })
  }
  const whole = kw === k && r0 === 0 && rows === totalRows
  const src = whole ? x : repack(rt, x, rows, rows, k, kw / 4, k, 1, r0 * k)
  rt.copyToTexture(src.buffer, kw * 4, texture, kw / 4, rows)
  if (src !== x) rt.release(src)
  return texture
}

/** Back to the pool: safe mid-batch, since later copies into it run after the dispatches before them. */
function releaseXTexture(rt: GpuRuntime, texture: GPUTexture): void {
  const pool = xTextures.get(rt)
  const key = `${texture.width}x${texture.height}`
  if (pool === undefined) return rt.destroyTexture(texture)
  let list = pool.get(key)
  if (list === undefined) pool.set(key, (list = []))
  list.push(texture)
}

const zeroBuffers = new WeakMap<GpuRuntime, Tensor>()
/** A zero vector of at least `n` floats, bound for an absent bias; grown as needed. */
function zeros(rt: GpuRuntime, n: number): Tensor {
  let t = zeroBuffers.get(rt)
  if (t === undefined || (t.shape[0] ?? 0) < n) {
    if (t !== undefined) rt.release(t)
    const size = Math.max(n, 256)
    t = rt.upload(new Float32Array(size), [size])
    zeroBuffers.set(rt, t)
  }
  return t
}

/** Splits a workgroup count over x and y so neither exceeds the per-dimension limit. */
function grid(rt: GpuRuntime, groups: number): [number, number] {
  const gx = Math.min(groups, rt.limits.maxComputeWorkgroupsPerDimension)
  return [gx, Math.ceil(groups / gx)]
}

/** dst[rows, 4·c4] = src[off + r·sr + c·sc] for r < validRows and c < cols, else 0. */
function repack(rt: GpuRuntime, src: Tensor, rows: number, validRows: number, cols: number, c4: number, sr: number, sc: number, off = 0): Tensor {
  const dst = rt.tensor([rows, c4 * 4])
  const u = uniforms([["u32", rows], ["u32", cols], ["u32", off], ["u32", sr], ["u32", sc], ["u32", c4], ["u32", validRows], ["u32", 0]])
  rt.dispatch(rt.pipeline("matmul-repack", repackSrc), [src, dst], grid(rt, Math.ceil((rows * c4) / 64)), u)
  return dst
}

/** dst += src, both `count` floats (a multiple of 4). */
function addInto(rt: GpuRuntime, src: Tensor, dst: Tensor, count: number): void {
  const u = uniforms([["u32", count / 4], ["u32", 0], ["u32", 0], ["u32", 0]])
  rt.dispatch(rt.pipeline("matmul-add", addSrc), [src, dst], grid(rt, Math.ceil(count / 4 / 64)), u)
}

/** dst[r, c0 + n] (+)= src[r·lds + n] for r < m, n < n. */
function unpad(rt: GpuRuntime, src: Tensor, lds: number, dst: Tensor, ldc: number, m: number, n: number, accumulate: boolean): void {
  const u = uniforms([["u32", m], ["u32", n], ["u32", lds], ["u32", ldc], ["u32", 0], ["u32", accumulate ? 1 : 0], ["u32", 0], ["u32", 0]])
  rt.dispatch(rt.pipeline("matmul-unpad", unpadSrc), [src, dst], grid(rt, Math.ceil((m * n) / 64)), u)
}

interface CpuCall {
  readonly variant: CpuVariant
  readonly a: Tensor | GPUTextureView
  /** vec4s per row of a storage A; 1 for a texture */
  readonly lda4: number
  readonly b: Tensor | GPUTextureView
  readonly ldb4: number
  readonly m: number
  /** vec4 columns to compute, a multiple of 4 */
  readonly n4: number
  readonly k4: number
  readonly c: Tensor
  readonly ldc4: number
  /** where C's first row and column start, in vec4s */
  readonly c04: number
  /** at least bias04 + n4 vec4s */
  readonly bias: Tensor
  readonly bias04: number
}

function dispatchCpu(rt: GpuRuntime, call: CpuCall): void {
  const v = call.variant
  const u = uniforms([
    ["u32", call.m], ["u32", call.n4], ["u32", call.k4], ["u32", call.lda4],
    ["u32", call.ldb4], ["u32", call.ldc4], ["u32", call.c04], ["u32", call.bias04],
  ])
  const gx = Math.ceil(call.n4 / (4 * v.WX))
  const gy = Math.ceil(call.m / (v.TM * v.WY))
  rt.dispatch(cpuPipeline(rt, v), [call.a, call.b, call.bias, call.c], [gx, gy], u)
}

interface TiledCall {
  readonly a: Tensor
  readonly sam: number
  readonly sak: number
  readonly b: Tensor
  readonly sbk: number
  readonly sbn: number
  readonly m: number
  readonly n: number
  readonly k: number
  readonly c: Tensor
  readonly ldc: number
  readonly c0: number
  readonly bias: Tensor | undefined
  readonly accumulate: boolean
}

function dispatchTiled(rt: GpuRuntime, call: TiledCall): void {
  const flags = (call.bias !== undefined ? 1 : 0) | (call.accumulate ? 2 : 0)
  const u = uniforms([
    ["u32", call.m], ["u32", call.n], ["u32", call.k], ["u32", flags],
    ["u32", 0], ["u32", call.sam], ["u32", call.sak], ["u32", call.ldc],
    ["u32", 0], ["u32", call.sbk], ["u32", call.sbn], ["u32", call.c0],
  ])
  const groups: [number, number] = [Math.ceil(call.n / 64), Math.ceil(call.m / 64)]
  rt.dispatch(rt.pipeline("matmul-tiled", tiledSrc), [call.a, call.b, call.bias ?? zeros(rt, 1), call.c], groups, u)
}

// ---- public ops ---------------------------------------------------------------------------------

export interface LinearOptions {
  readonly bias?: Tensor
  readonly addTo?: Tensor
  readonly variant?: MatmulVariant
}

/**
 * y[M,N] = x[M,K] · Wᵀ (+ bias[N]). With addTo (a [M,N] tensor), computes addTo += x·Wᵀ (+bias) in place
 * and returns addTo (residual connections). x may have leading dims ([…, K]); y is then […, N].
 * x must not alias addTo. Records work into the batch; nothing waits.
 */
export function linear(rt: GpuRuntime, x: Tensor, w: Weight, opts: LinearOptions = {}): Tensor {
  const [n, k] = w.shape
  const xk = x.shape[x.shape.length - 1]
  if (xk !== k) throw new Error(`linear: x has shape ${shapeString(x.shape)}, expected last dim ${k} (W is [${n}×${k}])`)
  const m = numel(x.shape) / k
  const outShape = [...x.shape.slice(0, -1), n]
  if (opts.bias !== undefined) expectShape("linear", "bias", opts.bias, [n])
  if (opts.addTo !== undefined) expectShape("linear", "addTo", opts.addTo, outShape)
  const y = opts.addTo ?? rt.tensor(outShape)
  if (m === 0) return y
  const accumulate = opts.addTo !== undefined
  if (w.storage === "buffer" && variantOf(rt, opts.variant) === "gpu") {
    for (const part of w.parts) {
      dispatchTiled(rt, {
        a: x, sam: k, sak: 1, b: part.tensor!, sbk: part.c4 * 4, sbn: 1,
        m, n: part.cols, k, c: y, ldc: n, c0: part.n0, bias: opts.bias, accumulate,
      })
    }
    return y
  }
  // The llvmpipe kernel reads x as vec4s along K (from a texture, or from storage zero-padded to 4),
  // and writes whole 16-column blocks of C: N not a multiple of 16 means a padded scratch C (and bias)
  // copied out afterwards; addTo, a scratch C added in afterwards.
  const k4 = w.kPadded / 4
  const nb = ceil16(n)
  const aligned = n === nb
  const c = aligned && !accumulate ? y : rt.tensor([m, nb])
  const bias = opts.bias === undefined ? zeros(rt, nb) : aligned ? opts.bias : repack(rt, opts.bias, 1, 1, n, nb / 4, 0, 1)
  const variant = cpuVariant(w.storage, m)
  // Texture rows are limited: x goes in chunks of rows, each written to its rows of C.
  const chunk = variant.aFrom === "texture" ? Math.floor((rt.limits.maxTextureDimension2D - 1) / 64) * 64 : m
  const padded = variant.aFrom === "buffer" && k % 4 !== 0 ? repack(rt, x, m, m, k, k4, k, 1) : x
  for (let r0 = 0; r0 < m; r0 += chunk) {
    const rows = Math.min(chunk, m - r0)
    const tex = variant.aFrom === "texture" ? xTexture(rt, x, k, r0, rows, m) : undefined
    for (const part of w.parts) {
      dispatchCpu(rt, {
        variant, a: tex?.createView() ?? padded, lda4: tex === undefined ? k4 : 1, b: part.view ?? part.tensor!, ldb4: part.c4,
        m: rows, n4: part.c4, k4, c, ldc4: nb / 4, c04: (r0 * nb + part.n0) / 4, bias, bias04: part.n0 / 4,
      })
    }
    if (tex !== undefined) releaseXTexture(rt, tex)
  }
  if (padded !== x) rt.release(padded)
  if (c !== y) {
    if (aligned) addInto(rt, c, y, m * n)
    else unpad(rt, c, nb, y, n, m, n, accumulate)
    rt.release(c)
  }
  if (opts.bias !== undefined && bias !== opts.bias) rt.release(bias)
  return y
}

export interface MatmulOptions {
  readonly transA?: boolean
  readonly transB?: boolean
  readonly variant?: MatmulVariant
}

/**
 * General C[M,N] = op(A)·op(B) on storage tensors, for training: NN, NT (transB: B is [N,K]) and
 * TN (transA: A is [K,M]); both flags together work too. Records work into the batch; nothing waits.
 */
export function matmul(rt: GpuRuntime, a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  if (a.shape.length !== 2 || b.shape.length !== 2) {
    throw new Error(`matmul: operands must be 2-D, got ${shapeString(a.shape)} and ${shapeString(b.shape)}`)
  }
  const transA = opts.transA === true
  const transB = opts.transB === true
  const [a0, a1] = a.shape as [number, number]
  const [b0, b1] = b.shape as [number, number]
  const [m, k] = transA ? [a1, a0] : [a0, a1]
  const [kb, n] = transB ? [b1, b0] : [b0, b1]
  if (k !== kb) throw new Error(`matmul: inner dims differ: op(A) is [${m}×${k}], op(B) is [${kb}×${n}]`)
  const c = rt.tensor([m, n])
  if (m === 0 || n === 0) return c
  if (variantOf(rt, opts.variant) === "gpu") {
    dispatchTiled(rt, {
      a, sam: transA ? 1 : k, sak: transA ? m : 1, b, sbk: transB ? 1 : n, sbn: transB ? k : 1,
      m, n, k, c, ldc: n, c0: 0, bias: undefined, accumulate: false,
    })
    return c
  }
  // llvmpipe kernel: A as [M, K↑4] rows, B as [K↑4, N↑16] rows; repack whatever is not already so.
  const k4 = Math.ceil(k / 4)
  const nb = ceil16(n)
  const ap = transA || k % 4 !== 0 ? repack(rt, a, m, m, k, k4, transA ? 1 : k, transA ? m : 1) : a
  const bp = transB || k % 4 !== 0 || n !== nb ? repack(rt, b, k4 * 4, k, n, nb / 4, transB ? 1 : n, transB ? k : 1) : b
  const cp = n === nb ? c : rt.tensor([m, nb])
  dispatchCpu(rt, {
    variant: CPU_STORAGE, a: ap, lda4: k4, b: bp, ldb4: nb / 4,
    m, n4: nb / 4, k4, c: cp, ldc4: nb / 4, c04: 0, bias: zeros(rt, nb), bias04: 0,
  })
  if (cp !== c) {
    unpad(rt, cp, nb, c, n, m, n, false)
    rt.release(cp)
  }
  if (ap !== a) rt.release(ap)
  if (bp !== b) rt.release(bp)
  return c
}
