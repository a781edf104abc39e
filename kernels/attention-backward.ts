/**
 * Training attention: a causal self-attention forward that also returns each row's logsumexp
 * (`attentionTrain`), and its FA2-style backward (`attentionBackward`) that recomputes the
 * probabilities from Q, K and the logsumexp instead of storing T×T. GQA/MQA: dK/dV are summed over the
 * query heads that share a kv head. Optional `segments` (u32 [T] document ids) restrict attention to
 * the query's own packed document. Memory O(T·d); deterministic (no atomics).
 *
 * One variant for every adapter, shaped for llvmpipe (see attention-backward.wgsl): several rows per
 * invocation, unrolled with named locals, the other side's rows streamed from storage several per loop
 * iteration; the tiling is tuned per machine (trainCandidates).
 */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape } from "./tensor.ts"
import { chooseVariant, probeTime, sizeBucket } from "./tuning.ts"
import { type Operand, textureOperand } from "./matmul.ts"
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
  /**
   * Index into each kernel's tiling candidates (trainCandidates; the last where a list is shorter)
   * instead of the tuned choice (tests).
   */
  readonly candidate?: number
  /** Where the streamed operands are read from (default: textures when T fits one; tests force either). */
  readonly stream?: StreamSource
}

export const MAX_TRAIN_HEAD_DIM = 256

export type TrainKernel = "forward" | "dq" | "dkdv"

/**
 * How a kernel is tiled: `rows` rows per invocation, the other side's rows streamed `step` per loop
 * iteration (the forward: a multiple of 4, as its online softmax updates once per 4 keys).
 */
export interface TrainTiling {
  readonly rows: number
  readonly step: number
}

/** The tuner's name of a tiling (what ROPEWAY_TUNING_PINS takes), e.g. "r8s4". */
export const tilingName = (t: TrainTiling): string => `r${t.rows}s${t.step}`

/**
 * Each kernel's tilings, the candidates timed per machine (kernels/tuning.ts; the first is the default).
 * Every streamed K/V (or Q/dO) component loaded feeds `rows` rows, and every row's state loaded feeds
 * `step` streamed rows; but LLVM compiles the unrolled loop body as one block whose cold compile time grows
 * steeply with the live state (rows·headDim·2 for the forward, ·3 for dq, ·4 for dkdv, plus the streamed
 * rows'). Measured at d 32 (AMD EPYC, llvmpipe, T 1024, CPU time per call; compile in CPU seconds, cold):
 * forward r16s4 18.8 ms (42 s compile), r12s4 21.4 (21 s), r8s8 24.6 (12 s); dq r16s1 28.9 (93 s),
 * r8s4 29.2 (23 s), r8s1 33.2 (18 s), r4s4 40.7 (7 s); dkdv r16s1 37.5 (148 s), r8s4 36.6 (39 s),
 * r6s4 39.7 (20 s), r4s4 46.7 (11 s). So the lists hold tilings that compile in about 20 s at most:
 * rows scaled down for wider heads (d 64: 10–22 s; d 128: forward r3s4 took 35 s, so wide heads stream
 * 8 keys per iteration with fewer rows there instead, r2s8 10 s).
 * Results do not depend on the choice: each row's sums run over the same keys in the same order.
 */
export function trainCandidates(kernel: TrainKernel, headDim: number): readonly TrainTiling[] {
  const rows = (at32: number): number => Math.max(1, Math.floor((at32 * 32) / Math.max(32, headDim)))
  const pairs: readonly (readonly [number, number])[] =
    kernel === "forward" ? (headDim <= 64 ? [[rows(12), 4], [rows(8), 8]] : [[rows(8), 8], [rows(4), 8]])
    : kernel === "dq" ? [[rows(8), 4], [rows(4), 4]]
    : [[rows(6), 4], [rows(4), 4]]
  const out: TrainTiling[] = []
  for (const [r, step] of pairs) if (!out.some((t) => t.rows === r && t.step === step)) out.push({ rows: r, step })
  return out
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

/** Where a kernel's streamed operands come from (see attention-backward.wgsl). */
export type StreamSource = "texture" | "buffer"

/** Load functions for the streamed operands of `kernel`, with their texture declarations. */
function streamCode(kernel: TrainKernel, from: StreamSource): string[] {
  const ops: readonly (readonly [string, string, number, string])[] =
    kernel === "dkdv" ? [["ldQ", "Q", 1, "qStride"], ["ldDO", "DO", 5, "qStride"]] : [["ldK", "K", 2, "kvStride"], ["ldV", "V", 3, "kvStride"]]
  return ops.flatMap(([fn, arr, binding, stride]) =>
    from === "texture"
      ? [`@group(0) @binding(${binding}) var ${arr}tex: texture_2d<f32>;`, `fn ${fn}(r: u32, c: u32) -> vec4f { return textureLoad(${arr}tex, vec2u(c, r), 0); }`]
      : [`fn ${fn}(r: u32, c: u32) -> vec4f { return ${arr}[r * P.${stride} + c]; }`],
  )
}

/** The template with `kernel` unrolled for headDim/4 = d4 and `tiling` (the other kernels' sections left
 *  empty), its streamed operands read from `from`. */
export function trainSource(kernel: TrainKernel, d4: number, tiling: TrainTiling, from: StreamSource = "buffer"): string {
  if (kernel === "forward" && tiling.step % 4 !== 0) throw new Error(`attention-train forward: step ${tiling.step} is not a multiple of 4`)
  const R = [...Array(tiling.rows).keys()]
  const C = [...Array(d4).keys()]
  const U = [...Array(tiling.step).keys()]
  const consts = setConst(setConst(setConst(template, "D4", d4), "ROWS", tiling.rows), "STEP", tiling.step)
  const src = setBlock(consts, "STREAM", streamCode(kernel, from))
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
  if (kernel === "forward") return forwardCode(R, C, U, fill)
  if (kernel === "dq") return dqCode(R, C, U, fill)
  return dkdvCode(R, C, U, fill)
}

/** `acc + term(0) + term(1) + …`, added one at a time in order: the sums of streaming one row per iteration. */
const chain = (acc: string, U: readonly number[], term: (u: number) => string): string =>
  U.reduce((sum, u) => `(${sum} + ${term(u)})`, acc)

type Fill = (load: readonly string[], block: readonly string[], store: readonly string[]) => string

/** The loop's streamed rows: `${v}0 = ${v}`, then `${v}u` clamped to `last`, with their segment ids in s0, s1, …. */
const streamedRows = (v: string, last: string, U: readonly number[]): string[] =>
  U.flatMap((u) => [u === 0 ? `let ${v}0 = ${v};` : `let ${v}${u} = min(${v} + ${u}u, ${last});`, `let s${u} = seg(${v}${u});`])

/**
 * Online softmax over 4 keys per update, U.length/4 updates per iteration (each the same update as one
 * per iteration). Keys past the last are clamped and masked.
 */
function forwardCode(R: readonly number[], C: readonly number[], U: readonly number[], fill: Fill): string {
  const blocks = [...Array(U.length / 4).keys()].map((b) => [0, 1, 2, 3].map((u) => 4 * b + u))
  const fl: string[] = []
  for (const t of R) {
    fl.push(`let qi${t} = q0 + lid.x + ${8 * t}u;`)
    fl.push(`let qb${t} = min(qi${t}, P.T - 1u) * P.qStride + qCol;`)
    fl.push(`let sq${t} = seg(min(qi${t}, P.T - 1u));`)
    for (const c of C) fl.push(`let q${t}_${c} = Q[qb${t} + ${c}u] * P.scale2;`)
    fl.push(`var m${t} = NEG;`, `var l${t} = 0.0;`)
    for (const c of C) fl.push(`var a${t}_${c} = vec4f(0.0);`)
  }
  const fb: string[] = streamedRows("j", "kLast", U)
  for (const c of C) for (const u of U) fb.push(`let k${u}_${c} = ldK(j${u}, kvCol + ${c}u);`)
  for (const t of R) {
    for (const [b, B] of blocks.entries()) {
      for (const u of B) {
        fb.push(`let ok${t}_${u} = (j + ${u}u <= qi${t}) & (s${u} == sq${t});`)
        fb.push(`let x${t}_${u} = select(NEG, ${dots((c) => `q${t}_${c}`, (c) => `k${u}_${c}`, C)}, ok${t}_${u});`)
      }
      const [u0, u1, u2, u3] = B as [number, number, number, number]
      fb.push(`let mn${t}_${b} = max(m${t}, max(max(x${t}_${u0}, x${t}_${u1}), max(x${t}_${u2}, x${t}_${u3})));`)
      fb.push(`let al${t}_${b} = exp2(m${t} - mn${t}_${b});`)
      for (const u of B) fb.push(`let p${t}_${u} = select(0.0, exp2(x${t}_${u} - mn${t}_${b}), ok${t}_${u});`)
      fb.push(`l${t} = l${t} * al${t}_${b} + ((p${t}_${u0} + p${t}_${u1}) + (p${t}_${u2} + p${t}_${u3}));`, `m${t} = mn${t}_${b};`)
    }
  }
  for (const c of C) {
    for (const u of U) fb.push(`let v${u}_${c} = ldV(j${u}, kvCol + ${c}u);`)
    for (const t of R) {
      for (const [b, B] of blocks.entries()) fb.push(`a${t}_${c} = a${t}_${c} * al${t}_${b} + ${B.map((u) => `p${t}_${u} * v${u}_${c}`).join(" + ")};`)
    }
  }
  const fs: string[] = []
  for (const t of R) {
    fs.push(`if (qi${t} < P.T) {`, `  let r${t} = 1.0 / l${t};`, `  let o${t} = qi${t} * P.qStride + qCol;`)
    for (const c of C) fs.push(`  O[o${t} + ${c}u] = a${t}_${c} * r${t};`)
    fs.push(`  LSEout[qi${t} * P.heads + h] = (m${t} + log2(l${t})) * LN2;`, `}`)
  }
  return fill(fl, fb, fs)
}

/** Keys streamed U.length per iteration: every query row's q, dO and dQ partials loaded once feed them all. */
function dqCode(R: readonly number[], C: readonly number[], U: readonly number[], fill: Fill): string {
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
  qb.push(...streamedRows("j", "kLast", U))
  for (const u of U) for (const c of C) qb.push(`let k${u}_${c} = ldK(j${u}, kvCol + ${c}u);`)
  for (const u of U) for (const c of C) qb.push(`let v${u}_${c} = ldV(j${u}, kvCol + ${c}u);`)
  for (const t of R) {
    for (const u of U) {
      qb.push(`let p${t}_${u} = select(0.0, exp2(${dots((c) => `q${t}_${c}`, (c) => `k${u}_${c}`, C)} - lse${t}), (j + ${u}u <= qi${t}) & (s${u} == sq${t}));`)
      qb.push(`let ds${t}_${u} = p${t}_${u} * ((${dots((c) => `do${t}_${c}`, (c) => `v${u}_${c}`, C)}) - dd${t});`)
    }
    for (const c of C) qb.push(`g${t}_${c} = ${chain(`g${t}_${c}`, U, (u) => `ds${t}_${u} * k${u}_${c}`)};`)
  }
  const qs: string[] = []
  for (const t of R) {
    qs.push(`if (qi${t} < P.T) {`)
    for (const c of C) qs.push(`  DQ[qb${t} + ${c}u] = g${t}_${c} * P.scale;`)
    qs.push(`}`)
  }
  return fill(ql, qb, qs)
}

/** Queries of every head in the group streamed past the invocation's key rows, U.length per iteration. */
function dkdvCode(R: readonly number[], C: readonly number[], U: readonly number[], fill: Fill): string {
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
  const kb: string[] = streamedRows("i", "iEnd - 1u", U)
  for (const u of U) {
    kb.push(u === 0 ? "let ok0 = true;" : `let ok${u} = i + ${u}u < iEnd;`, `let lse${u} = LSE[i${u} * P.heads + h] * LOG2E;`, `let dd${u} = DD[i${u} * P.heads + h];`)
  }
  for (const u of U) for (const c of C) kb.push(`let q${u}_${c} = ldQ(i${u}, qCol + ${c}u);`)
  for (const u of U) for (const c of C) kb.push(`let do${u}_${c} = ldDO(i${u}, qCol + ${c}u);`)
  for (const t of R) {
    for (const u of U) {
      kb.push(`let p${t}_${u} = select(0.0, exp2(${dots((c) => `q${u}_${c}`, (c) => `k${t}_${c}`, C)} - lse${u}), ok${u} & (kj${t} <= i + ${u}u) & (s${u} == sk${t}));`)
      kb.push(`let ds${t}_${u} = p${t}_${u} * ((${dots((c) => `do${u}_${c}`, (c) => `v${t}_${c}`, C)}) - dd${u});`)
    }
    for (const c of C) {
      kb.push(`gv${t}_${c} = ${chain(`gv${t}_${c}`, U, (u) => `p${t}_${u} * do${u}_${c}`)};`)
      kb.push(`gk${t}_${c} = ${chain(`gk${t}_${c}`, U, (u) => `ds${t}_${u} * q${u}_${c}`)};`)
    }
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
  readonly stream: StreamSource
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
  // Textures hold at most maxTextureDimension2D − 1 rows (one spare row keeps sizes off powers of two).
  const stream: StreamSource = opts.stream ?? (T < rt.limits.maxTextureDimension2D - 64 ? "texture" : "buffer")
  const kernel = (name: TrainKernel | "rowDot"): { pipeline: GPUComputePipeline; blocks: number } => {
    // rowDot has no unrolled section: any kernel's source carries it, the dq one is as good as any.
    const kind: TrainKernel = name === "rowDot" ? "dq" : name
    const candidates = trainCandidates(kind, headDim)
    const tiling = opts.candidate !== undefined ? candidates[Math.min(opts.candidate, candidates.length - 1)]! : tilingFor(rt, kind, heads, kvHeads, headDim, T)
    const label = `attention-train-${kind}-d${headDim}-${tilingName(tiling)}${stream === "texture" ? "-tex" : ""}`
    let code = sources.get(label)
    if (code === undefined) sources.set(label, (code = trainSource(kind, d4, tiling, stream)))
    const blocks = name === "rowDot" ? Math.ceil(T / 64) : Math.ceil(T / (8 * tiling.rows))
    return { pipeline: rt.pipeline(label, code, name), blocks }
  }
  // Unsegmented: q stands in for SEG (read-only everywhere, ≥ T words); its values are never used.
  return { T, params, seg: opts.segments ?? q, stream, kernel }
}

/** The tuned tiling of one kernel for this head shape and length. */
function tilingFor(rt: GpuRuntime, kind: TrainKernel, heads: number, kvHeads: number, headDim: number, T: number): TrainTiling {
  const candidates = trainCandidates(kind, headDim)
  const names = candidates.map(tilingName)
  const Tb = sizeBucket(T, 256)
  const name = chooseVariant(rt, {
    op: `attention-train-${kind}`,
    shape: `d${headDim} h${heads}/${kvHeads} T${Tb}`,
    candidates: names,
    probe: (rt2, c) => probeTrainKernel(rt2, kind, { heads, kvHeads, headDim, candidate: names.indexOf(c) }, Tb),
  })
  return candidates[names.indexOf(name)]!
}

/** ms per call of one kernel on random data of length T (the tuner's probe). */
async function probeTrainKernel(rt: GpuRuntime, kind: TrainKernel, opts: TrainAttentionOptions, T: number): Promise<number> {
  const { heads, kvHeads, headDim } = opts
  const rand = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => ((i * 2654435761) % 2001) / 1000 - 1)
  const q = rt.upload(rand(T * heads * headDim), [T, heads * headDim])
  const k = rt.upload(rand(T * kvHeads * headDim), [T, kvHeads * headDim])
  const v = rt.upload(rand(T * kvHeads * headDim), [T, kvHeads * headDim])
  const { o, lse } = attentionTrain(rt, q, k, v, opts)
  const { params, seg, stream, kernel } = prepare("probe", rt, q, k, v, opts)
  const f = kernel(kind)
  const dd = rt.tensor([T, heads])
  const out = [rt.tensor(q.shape), rt.tensor(k.shape), rt.tensor(k.shape)] as const
  const [ks, vs, qs, os] = streamed(rt, stream, [k, v, q, o])
  const bindings =
    kind === "forward" ? [q, ks.binding, vs.binding, seg, out[0], lse]
    : kind === "dq" ? [q, ks.binding, vs.binding, seg, o, lse, dd, out[0]]
    : [qs.binding, k, v, seg, os.binding, lse, dd, out[1], out[2]]
  try {
    return await probeTime(rt, () => rt.dispatch(f.pipeline, bindings, [f.blocks, kind === "dkdv" ? kvHeads : heads], params))
  } finally {
    for (const s of [ks, vs, qs, os]) s.release()
    rt.release(q, k, v, o, lse, dd, ...out)
  }
}

/** Causal self-attention over q [T, heads·headDim], k/v [T, kvHeads·headDim] → o like q, and lse [T, heads] (natural log). */
export function attentionTrain(rt: GpuRuntime, q: Tensor, k: Tensor, v: Tensor, opts: TrainAttentionOptions): { o: Tensor; lse: Tensor } {
  const { T, params, seg, stream, kernel } = prepare("attentionTrain", rt, q, k, v, opts)
  const o = rt.tensor(q.shape)
  const lse = rt.tensor([T, opts.heads])
  if (T === 0) return { o, lse }
  const f = kernel("forward")
  const [ks, vs] = streamed(rt, stream, [k, v])
  rt.dispatch(f.pipeline, [q, ks.binding, vs.binding, seg, o, lse], [f.blocks, opts.heads], params)
  ks.release()
  vs.release()
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
  const { T, params, seg, stream, kernel } = prepare("attentionBackward", rt, q, k, v, opts)
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
  const [ks, vs, qs, dos] = streamed(rt, stream, [k, v, q, dO])
  rt.dispatch(gq.pipeline, [q, ks.binding, vs.binding, seg, dO, lse, dd, dq], [gq.blocks, opts.heads], params)
  rt.dispatch(gkv.pipeline, [qs.binding, k, v, seg, dos.binding, lse, dd, dk, dv], [gkv.blocks, opts.kvHeads], params)
  for (const s of [ks, vs, qs, dos]) s.release()
  rt.release(dd)
  return { dq, dk, dv }
}

/** The tensors as a kernel's streamed operands: pooled texture copies, or the tensors themselves. */
function streamed<const L extends readonly Tensor[]>(rt: GpuRuntime, from: StreamSource, tensors: L): { [I in keyof L]: Operand } {
  return tensors.map((t): Operand => {
    if (from === "buffer") return { binding: t, ld4: 0, release: () => {} }
    const [rows, cols] = t.shape as [number, number]
    return textureOperand(rt, t, rows, cols, cols, 0, rows)
  }) as { [I in keyof L]: Operand }
}
