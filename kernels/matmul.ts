/**
 * Matmul kernels: `linear` (y = x·Wᵀ + b, the model's hot path) and a general `matmul` (NN, NT, TN, TT).
 *
 * Variants per adapter profile (override with `setMatmulVariant` or the `variant` option):
 * - "cpu" (llvmpipe): big register blocks, no workgroup memory (matmul-cpu.wgsl), transposed operands
 *   read in place. Operands come from rgba32float textures (copied in per call; weights prepared once)
 *   or from storage buffers; which, and the block shape, is a per-machine choice (kernels/tuning.ts)
 *   among tilings that all give bit-identical results.
 * - "gpu": workgroup-memory tiling (matmul-tiled.wgsl), weights in storage buffers.
 * Prepared weights are stored transposed, Wᵀ [K, N], zero-padded (K to 4, N to 16), so `linear` is an
 * NN product with no edge cases along N; a weight wider than one texture or binding is split into
 * column parts.
 *
 * A weight keeps its file dtype (`prepareWeight16`): f16 and bf16 stay 16-bit on the device and the
 * kernels widen each value as they load it, accumulating in f32. An f16 texture is rgba16float (the
 * texture unit widens it: the kernel is the f32 one); bf16 has no texture format, so its texels are
 * rgba32uint holding 8 values, widened by shifts (the fast path on llvmpipe, webgpu-cpu.md §5); in
 * storage, both are u32 words of two values (f16 widened by unpack2x16float).
 */
import { type Binding, type GpuRuntime, uniforms } from "./runtime.ts"
import { type Half, type Tensor, expectShape, numel, shapeString } from "./tensor.ts"
import { chooseVariant, probeTime, sizeBucket } from "./tuning.ts"
import { wgsl } from "./wgsl.ts"

const cpuTemplate = wgsl("./matmul-cpu.wgsl", import.meta.url)
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
  /** The values as stored: f32, or 16-bit as the file holds them (widened by the kernels). */
  readonly dtype: "f32" | Half
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
const ceil64 = (v: number): number => Math.ceil(v / 64) * 64

/** An f32 weight. */
export function prepareWeight(rt: GpuRuntime, data: Float32Array, n: number, k: number, opts: PrepareWeightOptions = {}): Weight {
  return prepare(rt, { dtype: "f32", data }, n, k, opts)
}

/** A 16-bit weight as its file stores it (the bits of W [N, K], row-major), kept 16-bit on the device. */
export function prepareWeight16(rt: GpuRuntime, bits: Uint16Array, dtype: Half, n: number, k: number, opts: PrepareWeightOptions = {}): Weight {
  return prepare(rt, { dtype, data: bits }, n, k, opts)
}

type HostValues = { readonly dtype: "f32"; readonly data: Float32Array } | { readonly dtype: Half; readonly data: Uint16Array }

/** Texture format of a weight's dtype and the values one texel holds. */
const TEXEL: Readonly<Record<"f32" | Half, { readonly format: GPUTextureFormat; readonly values: number; readonly bytes: number }>> = {
  f32: { format: "rgba32float", values: 4, bytes: 16 },
  f16: { format: "rgba16float", values: 4, bytes: 8 },
  bf16: { format: "rgba32uint", values: 8, bytes: 16 },
}

/** The device limits a weight's layout and the operand textures depend on. */
export type LayoutLimits = Pick<GPUSupportedLimits, "maxTextureDimension2D" | "maxStorageBufferBindingSize" | "maxBufferSize">

/** One column part of a prepared weight as laid out: a texture of texW × texH texels, or a buffer of kp rows of `width` values. */
export interface PartLayout {
  readonly n0: number
  readonly cols: number
  /** cols rounded up to 16 */
  readonly width: number
  readonly texW: number
  readonly texH: number
  /** Bytes on the device. */
  readonly bytes: number
}

/** Where a weight [n, k] goes by default: a texture for the "cpu" variant when K fits the texture limit, else a buffer. */
export const defaultWeightStorage = (variant: MatmulVariant, k: number, limits: LayoutLimits): "texture" | "buffer" =>
  variant === "cpu" && ceil4(k) + 1 <= limits.maxTextureDimension2D ? "texture" : "buffer"

/**
 * How a weight W [n, k] of `dtype` is laid out (`prepareWeight`; memory plans count the same): Wᵀ with K
 * padded to 4, in column parts of at most `partCols` (default: what one texture or binding holds), each 16-column aligned.
 */
export function weightLayout(n: number, k: number, dtype: "f32" | Half, storage: "texture" | "buffer", limits: LayoutLimits, partCols?: number): { readonly kp: number; readonly parts: readonly PartLayout[] } {
  const texel = TEXEL[dtype]
  const valueBytes = dtype === "f32" ? 4 : 2
  const kp = ceil4(k)
  const maxTex = limits.maxTextureDimension2D
  if (storage === "texture" && kp + 1 > maxTex) throw new Error(`prepareWeight: K=${k} exceeds the texture limit ${maxTex}`)
  const maxBytes = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize)
  const limitCols = Math.floor((storage === "texture" ? texel.values * (maxTex - 1) : maxBytes / (kp * valueBytes)) / 16) * 16
  const cols = Math.min(limitCols, partCols ?? limitCols)
  if (cols < 16 || cols % 16 !== 0) throw new Error(`prepareWeight: part width ${cols} must be a positive multiple of 16`)
  const parts: PartLayout[] = []
  for (let n0 = 0; n0 < n; n0 += cols) {
    const width = ceil16(Math.min(cols, n - n0))
    // llvmpipe compiles a shader variant per texture state, which includes whether each dimension is a
    // power of two: one spare texel column / row when it is keeps every weight on the same variant.
    const texels = width / texel.values
    const texW = storage === "texture" ? texels + (isPow2(texels) ? 1 : 0) : 0
    const texH = storage === "texture" ? kp + (isPow2(kp) ? 1 : 0) : 0
    parts.push({ n0, cols: Math.min(cols, n - n0), width, texW, texH, bytes: storage === "texture" ? texW * texH * texel.bytes : kp * width * valueBytes })
  }
  return { kp, parts }
}

function prepare(rt: GpuRuntime, host: HostValues, n: number, k: number, opts: PrepareWeightOptions): Weight {
  const data = host.data
  if (!(n > 0 && k > 0 && Number.isInteger(n) && Number.isInteger(k))) throw new Error(`prepareWeight: bad shape [${n}×${k}]`)
  if (data.length !== n * k) throw new Error(`prepareWeight: ${data.length} values do not fill [${n}×${k}]`)
  const texel = TEXEL[host.dtype]
  const storage = opts.storage ?? defaultWeightStorage(variantOf(rt, opts.variant), k, rt.limits)
  const { kp, parts: layout } = weightLayout(n, k, host.dtype, storage, rt.limits, opts.partCols)
  const parts: WeightPart[] = []
  rt.flush() // queue writes bypass the batch order
  for (const { n0, cols, width, texW, texH } of layout) {
    const c4 = width / 4
    if (storage === "texture") {
      const texture = rt.createTexture({
        label: `weight ${n}×${k} part ${n0}`,
        size: [texW, texH],
        format: texel.format,
        usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
      })
      const part = transposedPart(host, k, n0, cols, texW * texel.values, texH)
      rt.device.queue.writeTexture({ texture }, part, { bytesPerRow: texW * texel.bytes, rowsPerImage: texH }, [texW, texH])
      parts.push({ n0, cols, c4, texture, view: rt.textureView(texture) })
    } else if (host.dtype === "f32") {
      parts.push({ n0, cols, c4, tensor: rt.upload(transposedPart(host, k, n0, cols, width, kp) as Float32Array, [kp, width]) })
    } else {
      // 16-bit rows of `width` values: `width`/2 words, uploaded as u32 (a Tensor's elements are 4 bytes)
      const words = new Uint32Array((transposedPart(host, k, n0, cols, width, kp) as Uint16Array).buffer)
      parts.push({ n0, cols, c4, tensor: rt.upload(words, [kp, width / 2]) })
    }
  }
  return { shape: [n, k], dtype: host.dtype, storage, kPadded: kp, parts }
}

const isPow2 = (v: number): boolean => (v & (v - 1)) === 0

/** Rows of Wᵀ for columns n0 … n0+cols: out[r·width + c] = W[n0 + c][r]; the padding stays zero. */
function transposedPart(host: HostValues, k: number, n0: number, cols: number, width: number, rows: number): Float32Array | Uint16Array {
  const data = host.data
  const out = host.dtype === "f32" ? new Float32Array(width * rows) : new Uint16Array(width * rows)
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

// ---- the llvmpipe kernel ------------------------------------------------------------------------

export type OperandSource = "texture" | "buffer"

/** How the llvmpipe kernel is tiled: TM rows × 4·TN4 columns of C per invocation, WX×WY invocations per workgroup. */
export interface CpuTiling {
  readonly TM: number
  /** vec4 columns per invocation; divides 4, since C is computed in 16-column blocks */
  readonly TN4: number
  readonly WX: number
  readonly WY: number
}

/**
 * How the cpu kernel declares B and loads its texel (x, y) as a vec4f of 4 consecutive columns, for a 16-bit
 * weight: an f16 texture is rgba16float, read as f32 (the texture unit widens it); a bf16 texel holds 8
 * values (x picks a half); storage holds two words, four values, at the index a vec4 would have.
 */
function half16B(from: OperandSource, dtype: Half): { readonly decl: string; readonly load: string } {
  if (from === "texture") {
    if (dtype === "f16") return { decl: "@group(0) @binding(2) var b: texture_2d<f32>;", load: "return textureLoad(b, vec2u(x, y), 0);" }
    return { decl: "@group(0) @binding(2) var b: texture_2d<u32>;", load: "return bf16texel(textureLoad(b, vec2u(x >> 1u, y), 0), (x & 1u) == 1u);" }
  }
  return { decl: "@group(0) @binding(2) var<storage, read> b: array<vec2<u32>>;", load: `return ${dtype}x4(b[y * p.ldb + x]);` }
}

/** Widening 16-bit pairs (element 2i in a word's low half), for the templates. */
export const WIDEN16 = `
fn bf16x4(w: vec2<u32>) -> vec4f {
  return vec4f(bitcast<f32>(w.x << 16u), bitcast<f32>(w.x & 0xffff0000u), bitcast<f32>(w.y << 16u), bitcast<f32>(w.y & 0xffff0000u));
}
fn f16x4(w: vec2<u32>) -> vec4f {
  return vec4f(unpack2x16float(w.x), unpack2x16float(w.y));
}
// a bf16 texel: 8 values; the first or second four
fn bf16texel(t: vec4<u32>, second: bool) -> vec4f {
  return bf16x4(select(t.xy, t.zw, second));
}
`

/** Where the kernel reads each operand from and how it is stored (transA: Aᵀ row-major; transB: Bᵀ row-major). */
export interface CpuLayout {
  readonly a: OperandSource
  readonly b: OperandSource
  readonly transA: boolean
  readonly transB: boolean
  /** B's dtype as stored (a 16-bit weight, transB false, widened as loaded); default f32 */
  readonly bDtype?: "f32" | Half
}

/** A tuning candidate: operand sources plus tiling, named like "tt-64x16-8x1" (sources, block, workgroup). */
export interface CpuVariant {
  readonly a: OperandSource
  readonly b: OperandSource
  readonly tiling: CpuTiling
}

export const cpuVariantName = (v: CpuVariant): string =>
  `${v.a[0]}${v.b[0]}-${v.tiling.TM}x${4 * v.tiling.TN4}-${v.tiling.WX}x${v.tiling.WY}`

export function parseCpuVariant(name: string): CpuVariant {
  const m = /^([tb])([tb])-(\d+)x(\d+)-(\d+)x(\d+)$/.exec(name)
  const src = (c: string): OperandSource => (c === "t" ? "texture" : "buffer")
  if (m === null) throw new Error(`matmul: variant "${name}" is not of the form tt-64x16-8x1 (sources t/b, TM×TN, workgroup)`)
  const [TM, TN, WX, WY] = [Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])]
  if (TM % 4 !== 0 || ![4, 8, 16].includes(TN) || WX % 8 !== 0 || WY < 1 || WX * WY > 256) {
    throw new Error(`matmul: variant "${name}": TM must be a multiple of 4, TN 4, 8 or 16, WX a multiple of 8`)
  }
  return { a: src(m[1]!), b: src(m[2]!), tiling: { TM, TN4: TN / 4, WX, WY } }
}

const fill = (src: string, name: string, code: readonly string[]): string => {
  const line = new RegExp(`^( *)(.*)//% ${name}$`, "m")
  const m = line.exec(src)
  if (m === null) throw new Error(`matmul-cpu template: section ${name} not found`)
  const indent = m[1] ?? ""
  return src.replace(line, code.map((l) => indent + l).join("\n"))
}

/** The llvmpipe kernel for one tiling and layout, unrolled (named locals; see matmul-cpu.wgsl). */
export function cpuSource(t: CpuTiling, l: CpuLayout): string {
  const I = [...Array(t.TM).keys()]
  const I4 = [...Array(t.TM / 4).keys()]
  const J = [...Array(t.TN4).keys()]
  const N = [...Array(4 * t.TN4).keys()]
  const Q = [0, 1, 2, 3]
  const X = "xyzw"
  const decl = (name: string, binding: number, s: OperandSource): string =>
    s === "texture" ? `@group(0) @binding(${binding}) var ${name}: texture_2d<f32>;` : `@group(0) @binding(${binding}) var<storage, read> ${name}: array<vec4f>;`
  const load = (name: string, ld: string, s: OperandSource): string =>
    s === "texture" ? `return textureLoad(${name}, vec2u(x, y), 0);` : `return ${name}[y * p.${ld} + x];`
  const half = l.bDtype === undefined || l.bDtype === "f32" ? undefined : half16B(l.b, l.bDtype)
  const functions = [
    `const TM = ${t.TM}u;`,
    `const TN4 = ${t.TN4}u;`,
    `// Texel (vec4) x of row y.`,
    `fn loadA(x: u32, y: u32) -> vec4f { ${load("a", "lda", l.a)} }`,
    `fn loadB(x: u32, y: u32) -> vec4f { ${half?.load ?? load("b", "ldb", l.b)} }`,
    `fn storeRow(r: u32, at: u32, ${J.map((j) => `v${j}: vec4f`).join(", ")}) {`,
    `  if (r < p.M) { ${J.map((j) => `c[at + ${j}u] = v${j};`).join(" ")} }`,
    `}`,
  ]
  const setup: string[] = []
  const step: string[] = []
  if (l.transA) {
    for (const i4 of I4) setup.push(`let ac${i4} = min(row / 4u + ${i4}u, p.aLast);`)
    for (const q of Q) for (const i4 of I4) step.push(`let a${q}_${i4} = loadA(ac${i4}, k * 4u + ${q}u);`)
  } else {
    for (const i of I) setup.push(`let ar${i} = min(row + ${i}u, p.aLast);`)
    for (const i of I) step.push(`let a${i} = loadA(k, ar${i});`)
  }
  if (l.transB) {
    for (const n of N) setup.push(`let br${n} = min(col4 * 4u + ${n}u, p.bLast);`)
    for (const n of N) step.push(`let b${n} = loadB(k, br${n});`)
  } else {
    for (const j of J) setup.push(`let bc${j} = min(col4 + ${j}u, p.bLast);`)
    for (const q of Q) for (const j of J) step.push(`let b${q}_${j} = loadB(bc${j}, k * 4u + ${q}u);`)
  }
  for (const i of I) setup.push(`let cr${i} = min(row + ${i}u, p.M - 1u) * p.ldc + p.c0 + col4;`)
  for (const i of I) for (const j of J) setup.push(`var acc${i}_${j} = vec4f(0.0);`)
  const aVal = (i: number, q: number): string => (l.transA ? `a${q}_${i >> 2}.${X[i & 3]}` : `a${i}.${X[q]}`)
  const bVal = (q: number, j: number): string =>
    l.transB ? `vec4f(${[0, 1, 2, 3].map((c) => `b${4 * j + c}.${X[q]}`).join(", ")})` : `b${q}_${j}`
  // q outermost: every accumulator takes k = 4·k4, 4·k4+1, … in order.
  for (const q of Q) for (const i of I) for (const j of J) step.push(`acc${i}_${j} = fma(vec4f(${aVal(i, q)}), ${bVal(q, j)}, acc${i}_${j});`)
  const store: string[] = []
  for (const j of J) store.push(`let bias${j} = bias[p.biasOff + col4 + ${j}u];`)
  for (const i of I) store.push(`storeRow(row + ${i}u, cr${i}, ${J.map((j) => `acc${i}_${j} + bias${j}`).join(", ")});`)
  if (half !== undefined) functions.push(...WIDEN16.trim().split("\n"))
  let src = fill(cpuTemplate, "DECL", [decl("a", 1, l.a), half?.decl ?? decl("b", 2, l.b)])
  src = fill(src, "FUNCTIONS", functions)
  src = fill(src, "WORKGROUP", [`@compute @workgroup_size(${t.WX}, ${t.WY})`])
  src = fill(src, "SETUP", setup)
  src = fill(src, "STEP", step)
  return fill(src, "STORE", store)
}

const layoutName = (l: CpuLayout): string => `${l.transA ? "t" : "n"}${l.transB ? "t" : "n"}`

/** Compiled on first use. */
function cpuPipeline(rt: GpuRuntime, v: CpuVariant, transA: boolean, transB: boolean, bDtype: "f32" | Half = "f32"): GPUComputePipeline {
  const layout: CpuLayout = { a: v.a, b: v.b, transA, transB, bDtype }
  const label = `matmul-cpu-${layoutName(layout)}-${cpuVariantName(v)}${bDtype === "f32" ? "" : `-${bDtype}`}`
  let code = sources.get(label)
  if (code === undefined) sources.set(label, (code = cpuSource(v.tiling, layout)))
  return rt.pipeline(label, code)
}
const sources = new Map<string, string>()

/** One operand as a kernel binds it. */
export interface Operand {
  readonly binding: Binding
  /** vec4s per stored row (storage; 0 for a texture) */
  readonly ld4: number
  release(): void
}

export interface CpuCall {
  readonly variant: CpuVariant
  readonly transA: boolean
  readonly transB: boolean
  /** B's dtype as stored (a 16-bit weight is widened as loaded) */
  readonly bDtype?: "f32" | Half
  readonly a: Operand
  readonly b: Operand
  readonly m: number
  /** vec4 columns of C to compute, a multiple of 4 */
  readonly n4: number
  readonly k4: number
  /** last stored row (A) / vec4 column (Aᵀ), and last vec4 column (B) / row (Bᵀ) */
  readonly aLast: number
  readonly bLast: number
  readonly c: Tensor
  readonly ldc4: number
  /** where C's first row and column start, in vec4s */
  readonly c04: number
  /** at least bias04 + n4 vec4s */
  readonly bias: Tensor
  readonly bias04: number
}

export function dispatchCpu(rt: GpuRuntime, call: CpuCall): void {
  const t = call.variant.tiling
  const u = uniforms([
    ["u32", call.m], ["u32", call.n4], ["u32", call.k4], ["u32", call.a.ld4],
    ["u32", call.b.ld4], ["u32", call.ldc4], ["u32", call.c04], ["u32", call.bias04],
    ["u32", call.aLast], ["u32", call.bLast], ["u32", 0], ["u32", 0],
  ])
  const gx = Math.ceil(call.n4 / (t.TN4 * t.WX))
  const gy = Math.ceil(call.m / (t.TM * t.WY))
  rt.dispatch(cpuPipeline(rt, call.variant, call.transA, call.transB, call.bDtype), [call.a.binding, call.b.binding, call.bias, call.c], [gx, gy], u)
}

/**
 * The candidates the tuner times for a product of `m` rows (the first is the default). Texture operands
 * won every shape timed on an Intel Sapphire Rapids (64×16 blocks ~59 GFLOP/s at 1024³ against ~49 for
 * 32×16; storage operands peak at 16×16, ~25) and on an AMD EPYC (Zen 2: 10–11 GFLOP per CPU-second
 * against 5 for storage), so storage blocks are only the fallback for operands taller than a texture.
 * Large blocks compile longer cold (64×16: 2.5 s, 128×16: 10 s) and leave few workgroups when M is small
 * (weight gradients: M = a layer's width), and few rows (decode) get 8.
 */
export function matmulCandidates(m: number): readonly string[] {
  if (m <= 16) return ["bt-8x16-8x1"]
  if (m <= 64) return ["tt-16x16-8x1", "tt-32x16-8x1"]
  return ["tt-64x16-8x1", "tt-32x16-8x1", "tt-16x16-8x1"]
}


/**
 * Columns the tuner's probe times at most: a wider product (a 128k-vocabulary head) would need a random
 * operand of gigabytes, past the binding limit, while its prepared weight is split into parts anyway; the
 * tilings' cost per 16-column block does not depend on N.
 */
const PROBE_MAX_N = 4096

/** The tuned variant for this product (see kernels/tuning.ts); probes time it on operands of this shape (N capped). */
function cpuVariantFor(rt: GpuRuntime, op: "linear" | "matmul", transA: boolean, transB: boolean, m: number, n: number, k: number, bFixed?: OperandSource): CpuVariant {
  const all = matmulCandidates(m)
  const candidates = bFixed === undefined ? all : all.filter((c) => parseCpuVariant(c).b === bFixed)
  const list = candidates.length > 0 ? candidates : [bFixed === "buffer" ? "bb-16x16-8x2" : "bt-8x16-8x1"]
  // Rows and the summed dimension are bucketed (either can be a token count); columns are a weight's.
  const [mb, kb] = [sizeBucket(m, 16), sizeBucket(k, 16)]
  const shape = `${transA ? "t" : "n"}${transB ? "t" : "n"} m${mb} n${n} k${kb}${bFixed === undefined ? "" : ` w${bFixed[0]}`}`
  const name = chooseVariant(rt, {
    op: `matmul-cpu`,
    shape: `${op} ${shape}`,
    candidates: list,
    probe: (rt2, candidate) => {
      const np = Math.min(n, PROBE_MAX_N)
      return probeMatmul(rt2, parseCpuVariant(candidate), transA, transB, mb, np, probeK(rt2, kb, Math.max(mb, np)))
    },
  })
  return parseCpuVariant(name)
}

/**
 * The summed dimension a probe times: the bucket's, cut so that no random operand (K × `width` floats)
 * exceeds one storage binding (a head's gradient product, K = a 49k vocabulary rounded up to 64k, would);
 * the tilings' cost per step of K does not depend on K.
 */
export const probeK = (rt: Pick<GpuRuntime, "limits">, k: number, width: number): number =>
  Math.max(4, Math.min(k, Math.floor(rt.limits.maxStorageBufferBindingSize / (4 * width) / 4) * 4))

/** ms per call of one candidate on random operands of the given shape (the tuner's probe). */
async function probeMatmul(rt: GpuRuntime, v: CpuVariant, transA: boolean, transB: boolean, m: number, n: number, k: number): Promise<number> {
  const rand = (len: number): Float32Array => Float32Array.from({ length: len }, (_, i) => ((i * 2654435761) % 2001) / 1000 - 1)
  const a = rt.upload(rand(m * k), transA ? [k, m] : [m, k])
  const b = rt.upload(rand(k * n), transB ? [n, k] : [k, n])
  try {
    return await probeTime(rt, () => rt.release(cpuProduct(rt, a, b, m, n, k, transA, transB, v)))
  } finally {
    rt.release(a, b)
  }
}

// ---- operands for the llvmpipe kernel -----------------------------------------------------------

/**
 * rows × cols of `src` (row stride `ld` floats, from float `off`) as a pooled rgba32float texture
 * [cols/4 texels, rows], through a buffer → texture copy; rows are first repacked to a multiple of 64
 * floats (the copy's 256-byte row alignment) when they are not, and to `rowsTo` rows (zeros below).
 * Sizes are rounded (to 64 rows, or 512 above 512 rows, and kept off powers of two, which llvmpipe
 * compiles separate shader variants for) so a run needs only a few.
 */
export function textureOperand(rt: GpuRuntime, src: Tensor, rows: number, cols: number, ld: number, off: number, rowsTo: number): Operand {
  const cw = ceil64(cols)
  const [width, height] = operandTextureSize(rowsTo, cols, rt.limits.maxTextureDimension2D)
  const texture = rt.pooledTexture(width, height, `operand ${width}x${height}`)
  // A row-aligned source is copied as it is, from its offset (16-byte aligned: whole texels); another is
  // repacked first, into a buffer as tall as the texture (so the pool sees as few sizes as textures).
  const direct = cw === cols && ld === cols && off % 4 === 0 && rowsTo === rows
  const packed = direct ? src : repack(rt, src, height - 1, rows, cols, cw / 4, ld, 1, off)
  rt.copyToTexture(packed.buffer, cw * 4, texture, cw / 4, rowsTo, direct ? off * 4 : 0)
  if (packed !== src) rt.release(packed)
  return { binding: rt.textureView(texture), ld4: 0, release: () => rt.releaseTexture(texture) }
}

/** Texels [width, height] of the texture `textureOperand` copies `rows` × `cols` floats into (memory plans count the same). */
export function operandTextureSize(rows: number, cols: number, maxTextureDimension2D: number): readonly [number, number] {
  const rounded = rows <= 512 ? ceil64(rows) : Math.ceil(rows / 512) * 512
  return [ceil64(cols) / 4 + 1, (rounded < maxTextureDimension2D ? rounded : ceil64(rows)) + 1]
}

/** rows × cols of `src` as a storage operand with vec4 rows: as it is when that is already so, else repacked. */
function bufferOperand(rt: GpuRuntime, src: Tensor, rows: number, cols: number, ld: number, off: number, rowsTo: number): Operand {
  if (cols % 4 === 0 && ld === cols && off === 0 && rowsTo === rows) return { binding: src, ld4: cols / 4, release: () => {} }
  const c4 = Math.ceil(cols / 4)
  const packed = repack(rt, src, rowsTo, rows, cols, c4, ld, 1, off)
  return { binding: packed, ld4: c4, release: () => rt.release(packed) }
}

function operand(rt: GpuRuntime, s: OperandSource, src: Tensor, rows: number, cols: number, ld: number, off: number, rowsTo: number): Operand {
  return s === "texture" ? textureOperand(rt, src, rows, cols, ld, off, rowsTo) : bufferOperand(rt, src, rows, cols, ld, off, rowsTo)
}

/**
 * C [m, n] = op(A)·op(B) on the llvmpipe kernel, A and B as stored (A [m,k] or, transA, [k,m]; B [k,n]
 * or, transB, [n,k]). An operand taller than a texture holds is read from storage instead (same results).
 */
function cpuProduct(rt: GpuRuntime, a: Tensor, b: Tensor, m: number, n: number, k: number, transA: boolean, transB: boolean, v: CpuVariant): Tensor {
  const maxRows = rt.limits.maxTextureDimension2D - 1
  const k4 = Math.ceil(k / 4)
  const nb = ceil16(n)
  // Stored shapes: rows × cols; the K side padded to 4 (rows for Aᵀ and B, columns for A and Bᵀ).
  const [aRows, aCols, aRowsTo] = transA ? [k, m, 4 * k4] : [m, k, m]
  const [bRows, bCols, bRowsTo] = transB ? [n, k, n] : [k, n, 4 * k4]
  const aSrc: OperandSource = v.a === "texture" && aRowsTo <= maxRows && ceil64(aCols) / 4 < maxRows ? "texture" : "buffer"
  const bSrc: OperandSource = v.b === "texture" && bRowsTo <= maxRows && ceil64(bCols) / 4 < maxRows ? "texture" : "buffer"
  const variant: CpuVariant = { a: aSrc, b: bSrc, tiling: v.tiling }
  // Rows are read as vec4s (zero-padded to 4 when not so), the K side's rows zero-padded to 4·k4.
  const A = operand(rt, aSrc, a, aRows, aCols, aCols, 0, aRowsTo)
  const B = operand(rt, bSrc, b, bRows, bCols, bCols, 0, bRowsTo)
  const c = rt.tensor([m, n])
  const cp = n === nb ? c : rt.tensor([m, nb])
  dispatchCpu(rt, {
    variant, transA, transB, a: A, b: B, m, n4: nb / 4, k4,
    aLast: transA ? Math.ceil(m / 4) - 1 : m - 1,
    bLast: transB ? n - 1 : Math.ceil(n / 4) - 1,
    c: cp, ldc4: nb / 4, c04: 0, bias: zeros(rt, nb), bias04: 0,
  })
  A.release()
  B.release()
  if (cp !== c) {
    unpad(rt, cp, nb, c, n, m, n, false)
    rt.release(cp)
  }
  return c
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

// ---- the real-GPU kernel ------------------------------------------------------------------------

interface TiledCall {
  readonly a: Tensor
  /** B's dtype as stored (16-bit: u32 words, strides still in values) */
  readonly bDtype?: "f32" | Half
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

/** The tiled kernel reading B as 16-bit pairs (element e in word e/2, low half first), widened as staged. */
function tiledSource(bDtype: "f32" | Half): string {
  if (bDtype === "f32") return tiledSrc
  const decl = "@group(0) @binding(2) var<storage, read> b: array<f32>;"
  const load = "  return b[p.bOff + k * p.sbk + n * p.sbn];"
  if (!tiledSrc.includes(decl) || !tiledSrc.includes(load)) throw new Error("matmul-tiled.wgsl: B's declaration or load not found")
  const widen = bDtype === "bf16" ? "bitcast<f32>(select(w << 16u, w & 0xffff0000u, (e & 1u) == 1u))" : "select(unpack2x16float(w).x, unpack2x16float(w).y, (e & 1u) == 1u)"
  return tiledSrc
    .replace(decl, "@group(0) @binding(2) var<storage, read> b: array<u32>;")
    .replace(load, `  let e = p.bOff + k * p.sbk + n * p.sbn;\n  let w = b[e >> 1u];\n  return ${widen};`)
}

function dispatchTiled(rt: GpuRuntime, call: TiledCall): void {
  const flags = (call.bias !== undefined ? 1 : 0) | (call.accumulate ? 2 : 0)
  const u = uniforms([
    ["u32", call.m], ["u32", call.n], ["u32", call.k], ["u32", flags],
    ["u32", 0], ["u32", call.sam], ["u32", call.sak], ["u32", call.ldc],
    ["u32", 0], ["u32", call.sbk], ["u32", call.sbn], ["u32", call.c0],
  ])
  const groups: [number, number] = [Math.ceil(call.n / 64), Math.ceil(call.m / 64)]
  const bDtype = call.bDtype ?? "f32"
  rt.dispatch(rt.pipeline(`matmul-tiled-${bDtype}`, tiledSource(bDtype)), [call.a, call.b, call.bias ?? zeros(rt, 1), call.c], groups, u)
}

/** A variant named by the caller, checked against the weight's storage where there is one. */
function namedOrTuned(name: string | undefined, weight?: OperandSource): CpuVariant | undefined {
  if (name === undefined) return undefined
  const v = parseCpuVariant(name)
  if (weight !== undefined && v.b !== weight) throw new Error(`linear: variant "${name}" reads W from ${v.b}, but the weight is in a ${weight}`)
  return v
}

// ---- public ops ---------------------------------------------------------------------------------

/** Which kernel runs a product: the adapter's (or setMatmulVariant's), and on llvmpipe the tuned tiling unless named. */
export interface KernelChoice {
  readonly variant?: MatmulVariant
  /** The llvmpipe kernel's variant by name (e.g. "tt-64x16-8x1"), instead of the tuned one (tests). */
  readonly cpuVariant?: string
}

export interface LinearOptions extends KernelChoice {
  readonly bias?: Tensor
  readonly addTo?: Tensor
}

/** One projection of a shared input: y = x·Wᵀ (+ bias), or addTo += that. */
export interface LinearTarget {
  readonly w: Weight
  readonly bias?: Tensor | undefined
  readonly addTo?: Tensor | undefined
}

/**
 * y[M,N] = x[M,K] · Wᵀ (+ bias[N]). With addTo (a [M,N] tensor), computes addTo += x·Wᵀ (+bias) in place
 * and returns addTo (residual connections). x may have leading dims ([…, K]); y is then […, N].
 * x must not alias addTo. Records work into the batch; nothing waits.
 */
export function linear(rt: GpuRuntime, x: Tensor, w: Weight, opts: LinearOptions = {}): Tensor {
  return linearMany(rt, x, [{ w, bias: opts.bias, addTo: opts.addTo }], opts)[0]!
}

/**
 * Several projections of the same x (a layer's q/k/v, or gate/up): as `linear` each, but x is read into
 * the kernel's operand (a texture copy on llvmpipe) once for all of them.
 */
export function linearMany(rt: GpuRuntime, x: Tensor, targets: readonly LinearTarget[], choice: KernelChoice = {}): Tensor[] {
  const k = x.shape[x.shape.length - 1]!
  const m = numel(x.shape) / k
  const outs = targets.map(({ w, bias, addTo }) => {
    const [n, wk] = w.shape
    if (wk !== k) throw new Error(`linear: x has shape ${shapeString(x.shape)}, expected last dim ${wk} (W is [${n}×${wk}])`)
    const outShape = [...x.shape.slice(0, -1), n]
    if (bias !== undefined) expectShape("linear", "bias", bias, [n])
    if (addTo !== undefined) expectShape("linear", "addTo", addTo, outShape)
    return addTo ?? rt.tensor(outShape)
  })
  if (m === 0) return outs
  if (variantOf(rt, choice.variant) === "gpu" && targets.every((t) => t.w.storage === "buffer")) {
    targets.forEach(({ w, bias, addTo }, t) => {
      for (const part of w.parts) {
        dispatchTiled(rt, {
          a: x, sam: k, sak: 1, b: part.tensor!, bDtype: w.dtype, sbk: part.c4 * 4, sbn: 1,
          m, n: part.cols, k, c: outs[t]!, ldc: w.shape[0], c0: part.n0, bias, accumulate: addTo !== undefined,
        })
      }
    })
    return outs
  }
  // The llvmpipe kernel writes whole 16-column blocks of C: N not a multiple of 16 means a padded
  // scratch C (and bias) copied out afterwards; addTo, a scratch C added in afterwards.
  const plans = targets.map(({ w, bias, addTo }, t) => {
    const n = w.shape[0]
    const nb = ceil16(n)
    const aligned = n === nb
    const c = aligned && addTo === undefined ? outs[t]! : rt.tensor([m, nb])
    const b = bias === undefined ? zeros(rt, nb) : aligned ? bias : repack(rt, bias, 1, 1, n, nb / 4, 0, 1)
    return { w, n, nb, aligned, c, bias: b, variant: namedOrTuned(choice.cpuVariant, w.storage) ?? cpuVariantFor(rt, "linear", false, false, m, n, k, w.storage) }
  })
  // Texture rows are limited: x goes in chunks of rows, each written to its rows of C.
  const chunk = plans.some((p) => p.variant.a === "texture") ? Math.floor((rt.limits.maxTextureDimension2D - 1) / 64) * 64 : m
  for (let r0 = 0; r0 < m; r0 += chunk) {
    const rows = Math.min(chunk, m - r0)
    const operands = new Map<OperandSource, Operand>()
    for (const p of plans) {
      let a = operands.get(p.variant.a)
      if (a === undefined) operands.set(p.variant.a, (a = operand(rt, p.variant.a, x, rows, k, k, r0 * k, rows)))
      for (const part of p.w.parts) {
        const b: Operand = { binding: part.view ?? part.tensor!, ld4: part.c4, release: () => {} }
        dispatchCpu(rt, {
          variant: p.variant, transA: false, transB: false, bDtype: p.w.dtype, a, b, m: rows, n4: part.c4, k4: p.w.kPadded / 4, aLast: rows - 1, bLast: part.c4 - 1,
          c: p.c, ldc4: p.nb / 4, c04: (r0 * p.nb + part.n0) / 4, bias: p.bias, bias04: part.n0 / 4,
        })
      }
    }
    for (const a of operands.values()) a.release()
  }
  plans.forEach((p, t) => {
    const y = outs[t]!
    if (p.c !== y) {
      if (p.aligned) addInto(rt, p.c, y, m * p.n)
      else unpad(rt, p.c, p.nb, y, p.n, m, p.n, targets[t]!.addTo !== undefined)
      rt.release(p.c)
    }
    if (targets[t]!.bias !== undefined && p.bias !== targets[t]!.bias) rt.release(p.bias)
  })
  return outs
}

export interface MatmulOptions extends KernelChoice {
  readonly transA?: boolean
  readonly transB?: boolean
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
  if (m === 0 || n === 0) return rt.tensor([m, n])
  if (variantOf(rt, opts.variant) === "gpu") {
    const c = rt.tensor([m, n])
    dispatchTiled(rt, {
      a, sam: transA ? 1 : k, sak: transA ? m : 1, b, sbk: transB ? 1 : n, sbn: transB ? k : 1,
      m, n, k, c, ldc: n, c0: 0, bias: undefined, accumulate: false,
    })
    return c
  }
  const v = namedOrTuned(opts.cpuVariant) ?? cpuVariantFor(rt, "matmul", transA, transB, m, n, k)
  return cpuProduct(rt, a, b, m, n, k, transA, transB, v)
}
