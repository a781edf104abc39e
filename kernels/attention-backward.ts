/**
 * Training attention: a causal self-attention forward that also returns each row's logsumexp
 * (`attentionTrain`), and its FA2-style backward (`attentionBackward`) that recomputes the
 * probabilities from Q, K and the logsumexp instead of storing T×T. GQA/MQA: dK/dV are summed over the
 * query heads that share a kv head. Optional `segments` (u32 [T] document ids) restrict attention to
 * the query's own packed document. Memory O(T·d); deterministic (no atomics).
 *
 * One variant for every adapter, shaped for llvmpipe (see attention-backward.wgsl): several rows per
 * invocation, unrolled with named locals, the other side's rows streamed from storage.
 */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const template = wgsl("./attention-backward.wgsl", import.meta.url)

export interface TrainAttentionOptions {
  readonly heads: number
  readonly kvHeads: number
  readonly headDim: number
  /** Softmax scale; defaults to 1/sqrt(headDim). */
  readonly scale?: number
  /**
   * Document id per token (u32 [T], non-decreasing: packed documents back to back): a query attends
   * only to keys of its own document, and the kernels skip the other documents' rows entirely.
   */
  readonly segments?: Tensor
}

export const MAX_TRAIN_HEAD_DIM = 256

export type TrainKernel = "forward" | "dq" | "dkdv"

/**
 * Rows per invocation (the same for each kernel). Every K/V (or Q/dO) component loaded feeds that many
 * rows; the live state (rows·headDim·2 for the forward, ·3 for dq, ·4 for dkdv) spills past ~256 vec4s,
 * yet more rows still won on llvmpipe (A/B at T 1024, H 4, best of 4, 2 shared cores): d 64 forward
 * r4 94 ms → r8 57; dq r2 139, r4 69–102, r8 53; dkdv r2 176, r4 136, r8 63–93; d 128 every kernel
 * r4 ≈ 1.7× faster than r2. So 8 rows up to d 64, 4 at d 128, 2 at d 256. Cold LLVM compile grows
 * with rows·headDim: d 16 ~2 s for all three kernels, d 64 ~20 s, d 128 ~25 s (Mesa's disk cache then
 * makes it milliseconds).
 */
export function trainRows(headDim: number): number {
  return Math.max(2, Math.min(8, Math.floor(512 / headDim)))
}

const setConst = (src: string, name: string, value: number): string => {
  const line = new RegExp(`const ${name}: u32 = 0u; *//% ${name}`)
  if (!line.test(src)) throw new Error(`attention-backward template: constant ${name} not found`)
  return src.replace(line, `const ${name}: u32 = ${value}u;`)
}

const setBlock = (src: string, name: string, code: readonly string[]): string => {
  const line = new RegExp(`^( *)//% ${name}$`, "m")
  const m = line.exec(src)
  if (m === null) throw new Error(`attention-backward template: section ${name} not found`)
  const indent = m[1] ?? ""
  return src.replace(line, code.map((l) => indent + l).join("\n"))
}

/** Sum of dot products over the head's vec4s, as one expression. */
const dots = (a: (c: number) => string, b: (c: number) => string, C: readonly number[]): string =>
  C.map((c) => `dot(${a(c)}, ${b(c)})`).join(" + ")

/** The template with `kernel` unrolled for headDim/4 = d4 and `rows` rows per invocation (the other
 *  kernels' sections left empty). */
export function trainSource(kernel: TrainKernel, d4: number, rows: number): string {
  const R = [...Array(rows).keys()]
  const C = [...Array(d4).keys()]
  const src = setConst(setConst(template, "D4", d4), "ROWS", rows)
  const sections: Record<TrainKernel, readonly [string, string, string]> = {
    forward: ["FWD_LOAD", "FWD_BLOCK", "FWD_STORE"],
    dq: ["DQ_LOAD", "DQ_BLOCK", "DQ_STORE"],
    dkdv: ["DKV_LOAD", "DKV_BLOCK", "DKV_STORE"],
  }
  const fill = (load: readonly string[], block: readonly string[], store: readonly string[]): string => {
    let out = src
    for (const [k, names] of Object.entries(sections) as [TrainKernel, readonly [string, string, string]][]) {
      const on = k === kernel
      out = setBlock(out, names[0], on ? load : [])
      out = setBlock(out, names[1], on ? block : [])
      out = setBlock(out, names[2], on ? store : [])
    }
    return out
  }
  if (kernel === "forward") return forwardCode(R, C, fill)
  if (kernel === "dq") return dqCode(R, C, fill)
  return dkdvCode(R, C, fill)
}

type Fill = (load: readonly string[], block: readonly string[], store: readonly string[]) => string

/** Online softmax over 4 keys per update (rows past the last key are clamped in the template and masked). */
function forwardCode(R: readonly number[], C: readonly number[], fill: Fill): string {
  const U = [0, 1, 2, 3]

  const fl: string[] = []
  for (const t of R) {
    fl.push(`let qi${t} = q0 + lid.x + ${8 * t}u;`)
    fl.push(`let qb${t} = min(qi${t}, P.T - 1u) * P.qStride + qCol;`)
    fl.push(`let sq${t} = seg(min(qi${t}, P.T - 1u));`)
    for (const c of C) fl.push(`let q${t}_${c} = Q[qb${t} + ${c}u] * P.scale2;`)
    fl.push(`var m${t} = NEG;`, `var l${t} = 0.0;`)
    for (const c of C) fl.push(`var a${t}_${c} = vec4f(0.0);`)
  }
  const fb: string[] = []
  for (const c of C) for (const u of U) fb.push(`let k${u}_${c} = K[b${u} + ${c}u];`)
  for (const t of R) {
    for (const u of U) {
      fb.push(`let ok${t}_${u} = (j + ${u}u <= qi${t}) & (s${u} == sq${t});`)
      fb.push(`let x${t}_${u} = select(NEG, ${dots((c) => `q${t}_${c}`, (c) => `k${u}_${c}`, C)}, ok${t}_${u});`)
    }
    fb.push(`let mn${t} = max(m${t}, max(max(x${t}_0, x${t}_1), max(x${t}_2, x${t}_3)));`)
    fb.push(`let al${t} = exp2(m${t} - mn${t});`)
    for (const u of U) fb.push(`let p${t}_${u} = select(0.0, exp2(x${t}_${u} - mn${t}), ok${t}_${u});`)
    fb.push(`l${t} = l${t} * al${t} + ((p${t}_0 + p${t}_1) + (p${t}_2 + p${t}_3));`, `m${t} = mn${t};`)
  }
  for (const c of C) {
    for (const u of U) fb.push(`let v${u}_${c} = V[b${u} + ${c}u];`)
    for (const t of R) fb.push(`a${t}_${c} = a${t}_${c} * al${t} + p${t}_0 * v0_${c} + p${t}_1 * v1_${c} + p${t}_2 * v2_${c} + p${t}_3 * v3_${c};`)
  }
  const fs: string[] = []
  for (const t of R) {
    fs.push(`if (qi${t} < P.T) {`, `  let r${t} = 1.0 / l${t};`, `  let o${t} = qi${t} * P.qStride + qCol;`)
    for (const c of C) fs.push(`  O[o${t} + ${c}u] = a${t}_${c} * r${t};`)
    fs.push(`  LSEout[qi${t} * P.heads + h] = (m${t} + log2(l${t})) * LN2;`, `}`)
  }
  return fill(fl, fb, fs)
}

function dqCode(R: readonly number[], C: readonly number[], fill: Fill): string {
  const ql: string[] = []
  for (const t of R) {
    ql.push(`let qi${t} = q0 + lid.x + ${8 * t}u;`)
    ql.push(`let qr${t} = min(qi${t}, P.T - 1u);`)
    ql.push(`let qb${t} = qr${t} * P.qStride + qCol;`)
    ql.push(`let sq${t} = seg(qr${t});`)
    ql.push(`let lse${t} = LSE[qr${t} * P.heads + h] * LOG2E;`)
    ql.push(`let dd${t} = DD[qr${t} * P.heads + h];`)
    for (const c of C) ql.push(`let q${t}_${c} = Q[qb${t} + ${c}u] * P.scale2;`)
    for (const c of C) ql.push(`let do${t}_${c} = DO[qb${t} + ${c}u];`)
    for (const c of C) ql.push(`var g${t}_${c} = vec4f(0.0);`)
  }
  const qb: string[] = []
  for (const c of C) qb.push(`let k${c} = K[b + ${c}u];`)
  for (const c of C) qb.push(`let v${c} = V[b + ${c}u];`)
  for (const t of R) {
    qb.push(`let p${t} = select(0.0, exp2(${dots((c) => `q${t}_${c}`, (c) => `k${c}`, C)} - lse${t}), (j <= qi${t}) & (sj == sq${t}));`)
    qb.push(`let ds${t} = p${t} * ((${dots((c) => `do${t}_${c}`, (c) => `v${c}`, C)}) - dd${t});`)
    for (const c of C) qb.push(`g${t}_${c} += ds${t} * k${c};`)
  }
  const qs: string[] = []
  for (const t of R) {
    qs.push(`if (qi${t} < P.T) {`)
    for (const c of C) qs.push(`  DQ[qb${t} + ${c}u] = g${t}_${c} * P.scale;`)
    qs.push(`}`)
  }
  return fill(ql, qb, qs)
}

/** Queries of every head in the group streamed past the invocation's key rows. */
function dkdvCode(R: readonly number[], C: readonly number[], fill: Fill): string {
  const kl: string[] = []
  for (const t of R) {
    kl.push(`let kj${t} = j0 + lid.x + ${8 * t}u;`)
    kl.push(`let kr${t} = min(kj${t}, P.T - 1u);`)
    kl.push(`let kb${t} = kr${t} * P.kvStride + kvCol;`)
    kl.push(`let sk${t} = seg(kr${t});`)
    for (const c of C) kl.push(`let k${t}_${c} = K[kb${t} + ${c}u] * P.scale2;`)
    for (const c of C) kl.push(`let v${t}_${c} = V[kb${t} + ${c}u];`)
    for (const c of C) kl.push(`var gk${t}_${c} = vec4f(0.0);`, `var gv${t}_${c} = vec4f(0.0);`)
  }
  const kb: string[] = []
  for (const c of C) kb.push(`let q${c} = Q[b + ${c}u];`)
  for (const c of C) kb.push(`let do${c} = DO[b + ${c}u];`)
  for (const t of R) {
    kb.push(`let p${t} = select(0.0, exp2(${dots((c) => `q${c}`, (c) => `k${t}_${c}`, C)} - lse2), (kj${t} <= i) & (si == sk${t}));`)
    kb.push(`let ds${t} = p${t} * ((${dots((c) => `do${c}`, (c) => `v${t}_${c}`, C)}) - dd);`)
    for (const c of C) kb.push(`gv${t}_${c} += p${t} * do${c};`, `gk${t}_${c} += ds${t} * q${c};`)
  }
  const ks: string[] = []
  for (const t of R) {
    ks.push(`if (kj${t} < P.T) {`)
    for (const c of C) ks.push(`  DK[kb${t} + ${c}u] = gk${t}_${c} * P.scale;`, `  DV[kb${t} + ${c}u] = gv${t}_${c};`)
    ks.push(`}`)
  }
  return fill(kl, kb, ks)
}

const sources = new Map<string, string>()

interface Prepared {
  readonly T: number
  readonly params: Uint32Array
  readonly seg: Tensor
  /** The kernel's pipeline and its workgroups along x. */
  readonly kernel: (k: TrainKernel | "rowDot") => { pipeline: GPUComputePipeline; blocks: number }
}

function prepare(op: string, rt: GpuRuntime, q: Tensor, k: Tensor, v: Tensor, opts: TrainAttentionOptions): Prepared {
  const { heads, kvHeads, headDim } = opts
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 4 !== 0 || headDim > MAX_TRAIN_HEAD_DIM) {
    throw new Error(`${op}: headDim ${headDim} must be a multiple of 4 in 4..${MAX_TRAIN_HEAD_DIM}`)
  }
  if (!Number.isInteger(kvHeads) || kvHeads <= 0 || !Number.isInteger(heads) || heads <= 0 || heads % kvHeads !== 0) {
    throw new Error(`${op}: heads ${heads} must be a positive multiple of kvHeads ${kvHeads}`)
  }
  const T = q.shape[0] ?? 0
  expectShape(op, "q", q, [T, heads * headDim])
  expectShape(op, "k", k, [T, kvHeads * headDim])
  expectShape(op, "v", v, [T, kvHeads * headDim])
  if (opts.segments !== undefined) {
    expectShape(op, "segments", opts.segments, [T])
    if (opts.segments.dtype !== "u32") throw new Error(`${op}: segments must be u32, got ${opts.segments.dtype}`)
  }
  const qBytes = T * heads * headDim * 4
  if (qBytes > rt.limits.maxStorageBufferBindingSize) {
    throw new Error(`${op}: q of ${T}×${heads * headDim} f32 (${qBytes} bytes) exceeds the storage binding limit of ${rt.limits.maxStorageBufferBindingSize} bytes; split the heads into groups`)
  }
  const d4 = headDim / 4
  const scale = opts.scale ?? 1 / Math.sqrt(headDim)
  const params = uniforms([
    ["u32", T],
    ["u32", heads],
    ["u32", heads / kvHeads],
    ["u32", heads * d4],
    ["u32", kvHeads * d4],
    ["u32", opts.segments === undefined ? 0 : 1],
    ["f32", scale * Math.LOG2E],
    ["f32", scale],
  ])
  const kernel = (name: TrainKernel | "rowDot"): { pipeline: GPUComputePipeline; blocks: number } => {
    // rowDot has no unrolled section: any kernel's source carries it, the dq one is as good as any.
    const kind: TrainKernel = name === "rowDot" ? "dq" : name
    const rows = trainRows(headDim)
    const label = `attention-train-${kind}-d${headDim}-r${rows}`
    let code = sources.get(label)
    if (code === undefined) sources.set(label, (code = trainSource(kind, d4, rows)))
    const blocks = name === "rowDot" ? Math.ceil(T / 64) : Math.ceil(T / (8 * rows))
    return { pipeline: rt.pipeline(label, code, name), blocks }
  }
  // Unsegmented: q stands in for SEG (read-only everywhere, ≥ T words); its values are never used.
  return { T, params, seg: opts.segments ?? q, kernel }
}

/** Causal self-attention over q [T, heads·headDim], k/v [T, kvHeads·headDim] → o like q, and lse [T, heads] (natural log). */
export function attentionTrain(rt: GpuRuntime, q: Tensor, k: Tensor, v: Tensor, opts: TrainAttentionOptions): { o: Tensor; lse: Tensor } {
  const { T, params, seg, kernel } = prepare("attentionTrain", rt, q, k, v, opts)
  const o = rt.tensor(q.shape)
  const lse = rt.tensor([T, opts.heads])
  if (T === 0) return { o, lse }
  const f = kernel("forward")
  rt.dispatch(f.pipeline, [q, k, v, seg, o, lse], [f.blocks, opts.heads], params)
  return { o, lse }
}

/** Gradients of attentionTrain: from q, k, v, its o and lse, and dO (like o) → dq like q, dk and dv like k. */
export function attentionBackward(
  rt: GpuRuntime,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  opts: TrainAttentionOptions,
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const { T, params, seg, kernel } = prepare("attentionBackward", rt, q, k, v, opts)
  expectShape("attentionBackward", "o", o, q.shape)
  expectShape("attentionBackward", "dO", dO, q.shape)
  expectShape("attentionBackward", "lse", lse, [T, opts.heads])
  const dq = rt.tensor(q.shape)
  const dk = rt.tensor(k.shape)
  const dv = rt.tensor(v.shape)
  if (T === 0) return { dq, dk, dv }
  const dd = rt.tensor([T, opts.heads])
  const r = kernel("rowDot"), gq = kernel("dq"), gkv = kernel("dkdv")
  rt.dispatch(r.pipeline, [dO, o, dd], [r.blocks, opts.heads], params)
  rt.dispatch(gq.pipeline, [q, k, v, seg, dO, lse, dd, dq], [gq.blocks, opts.heads], params)
  rt.dispatch(gkv.pipeline, [q, k, v, seg, dO, lse, dd, dk, dv], [gkv.blocks, opts.kvHeads], params)
  rt.release(dd)
  return { dq, dk, dv }
}
