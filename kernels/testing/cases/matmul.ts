/** Table cases of `linear` (y = x·Wᵀ + b, prepared weights) and `matmul` (NN, NT, TN, TT). */
import { type MatmulVariant, linear, matmul, matmulCandidates, prepareWeight, releaseWeight } from "../../matmul.ts"
import { matmulRef } from "../../matmul.ref.ts"
import type { AdapterProfile, GpuRuntime } from "../../runtime.ts"
import { type KernelCase, type KernelOp, type Variant, expectShapeOf, once, launcher } from "../kernel-case.ts"
import { rand } from "../random.ts"

export interface LinearVariant extends Variant {
  readonly kernel: MatmulVariant
  readonly storage: "texture" | "buffer"
  /** The llvmpipe kernel's tiling and operand sources by name (default: the tuned one). */
  readonly cpuVariant?: string
}

/**
 * Every llvmpipe tiling the tuner may pick (kernels/tuning.ts), by name: x from a texture or storage,
 * W from a texture; "bb-16x16-8x2" is the storage-weight fallback for K past the texture limit.
 */
const CPU_TILINGS: readonly string[] = [...new Set([...matmulCandidates(1), ...matmulCandidates(64), ...matmulCandidates(1024)])]
const BUFFER_WEIGHT_TILINGS: readonly string[] = ["bb-16x16-8x2", "tb-16x16-8x1"]

/**
 * What a run can take: llvmpipe's kernel with texture weights (the cpu profile's default), with buffer
 * weights (its fallback for K past the texture limit), each with its tuned tiling (with tuning off, the
 * default for M) and every tiling named; and the tiled kernel with buffer weights (the gpu profile's).
 * All of them sum each output in the same order, so they agree to the bit.
 */
export const LINEAR_VARIANTS: readonly LinearVariant[] = [
  { name: "cpu kernel, texture weight", kernel: "cpu", storage: "texture" },
  ...CPU_TILINGS.map((t): LinearVariant => ({ name: `cpu kernel ${t}, texture weight`, kernel: "cpu", storage: "texture", cpuVariant: t })),
  { name: "cpu kernel, buffer weight", kernel: "cpu", storage: "buffer" },
  ...BUFFER_WEIGHT_TILINGS.map((t): LinearVariant => ({ name: `cpu kernel ${t}, buffer weight`, kernel: "cpu", storage: "buffer", cpuVariant: t })),
  { name: "gpu kernel, buffer weight", kernel: "gpu", storage: "buffer" },
]

/** The variant `prepareWeight` and `linear` pick by default on an adapter of this profile (K within the texture limit). */
export const defaultLinearVariant = (profile: AdapterProfile): LinearVariant =>
  LINEAR_VARIANTS.find((v) => v.cpuVariant === undefined && (profile === "cpu" ? v.kernel === "cpu" && v.storage === "texture" : v.kernel === "gpu"))!

export interface MatmulKernelVariant extends Variant {
  readonly kernel: MatmulVariant
  readonly cpuVariant?: string
}

export const MATMUL_VARIANTS: readonly MatmulKernelVariant[] = [
  { name: "cpu kernel", kernel: "cpu" },
  ...[...CPU_TILINGS, ...BUFFER_WEIGHT_TILINGS].map((t): MatmulKernelVariant => ({ name: `cpu kernel ${t}`, kernel: "cpu", cpuVariant: t })),
  { name: "gpu kernel", kernel: "gpu" },
]

const kernelChoice = (v: LinearVariant | MatmulKernelVariant) => ({ variant: v.kernel, ...(v.cpuVariant === undefined ? {} : { cpuVariant: v.cpuVariant }) })

const maxAbs = (v: ArrayLike<number>): number => {
  let m = 0
  for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(v[i]!))
  return m
}

/**
 * 4·eps32·sqrt(K) · sqrt(K)·max|a|·max|b|. Each output sums K products in f32; the partial sums stay near
 * sqrt(K)·max|a|·max|b| (random signs), and K roundings of up to an ulp of that add up like a random
 * walk, sqrt(K) of them. The ×4 covers the tail over thousands of outputs. An indexing error shows up as
 * a whole missing or extra term (≈ max|a|·max|b|), far above this for the sizes tested.
 */
function matmulTolerance(k: number, a: ArrayLike<number>, b: ArrayLike<number>): number {
  return 4 * 2 ** -23 * Math.sqrt(k) * (Math.sqrt(k) * maxAbs(a) * maxAbs(b))
}

export interface LinearParams {
  readonly m: number
  readonly n: number
  readonly k: number
  readonly bias?: boolean
  /** Accumulate into a [M, N] tensor (residual connections). */
  readonly addTo?: boolean
  /** Most weight columns per part (forces a split into parts). */
  readonly partCols?: number
  /** x's leading dims (default [m]): x is [...lead, K], y [...lead, N]. */
  readonly lead?: readonly number[]
  /** What the case is for. */
  readonly note?: string
}

export function linearCase(p: LinearParams): KernelCase<LinearVariant> {
  const { m, n, k } = p
  const lead = p.lead ?? [m]
  const host = once(() => ({
    x: rand(m * k, m * 7 + k),
    w: rand(n * k, n * 13 + k),
    bias: rand(n, n + 5),
    base: rand(m * n, m + n),
  }))
  const flags = [p.bias === true ? "bias" : "", p.addTo === true ? "addTo" : "", p.partCols !== undefined ? `parts of ${p.partCols} columns` : ""]
  const name = [`${m}×${n}×${k}`, ...flags.filter((f) => f !== "")].join(", ") + (p.note !== undefined ? ` (${p.note})` : "")
  return {
    name,
    dtype: "f32",
    applies: (v, rt) => v.storage === "buffer" || Math.ceil(k / 4) * 4 + 1 <= rt.limits.maxTextureDimension2D,
    setup(rt, v) {
      const { x, w, bias, base } = host()
      const weight = prepareWeight(rt, w, n, k, { variant: v.kernel, storage: v.storage, ...(p.partCols !== undefined ? { partCols: p.partCols } : {}) })
      const xt = rt.upload(x, [...lead, k])
      const bt = p.bias === true ? rt.upload(bias) : undefined
      const acc = p.addTo === true ? rt.upload(base, [...lead, n]) : undefined
      const run = () => {
        const y = linear(rt, xt, weight, { ...kernelChoice(v), ...(bt !== undefined ? { bias: bt } : {}), ...(acc !== undefined ? { addTo: acc } : {}) })
        if (acc !== undefined && y !== acc) throw new Error("linear: with addTo, the result must be addTo itself")
        return { y: expectShapeOf("linear", "y", y, [...lead, n]) }
      }
      return launcher(rt, [xt, bt, acc], run, { cleanup: () => releaseWeight(rt, weight) })
    },
    expected: once(() => {
      const { x, w, bias, base } = host()
      const want = matmulRef(x, w, m, n, k, { transB: true })
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          if (p.bias === true) want[i * n + j]! += bias[j]!
          if (p.addTo === true) want[i * n + j]! += base[i * n + j]!
        }
      // Adding bias and base (both ≤ 1) rounds once or twice more, at the scale of the result.
      const abs = matmulTolerance(k, x, w) + 4 * 2 ** -23 * (Math.sqrt(k) * maxAbs(x) * maxAbs(w) + 2)
      return { y: { want, tol: { abs }, shape: [m, n] } }
    }),
  }
}

export interface MatmulParams {
  readonly m: number
  readonly n: number
  readonly k: number
  readonly transA: boolean
  readonly transB: boolean
}

export function matmulCase(p: MatmulParams): KernelCase<MatmulKernelVariant> {
  const { m, n, k, transA, transB } = p
  const host = once(() => ({ a: rand(m * k, m + 3 * k), b: rand(k * n, n + 5 * k) }))
  return {
    name: `${m}×${n}×${k}${transA ? ", A transposed" : ""}${transB ? ", B transposed" : ""}`,
    dtype: "f32",
    setup(rt, v) {
      const { a, b } = host()
      const at = rt.upload(a, transA ? [k, m] : [m, k])
      const bt = rt.upload(b, transB ? [n, k] : [k, n])
      return launcher(rt, [at, bt], () => ({ c: expectShapeOf("matmul", "C", matmul(rt, at, bt, { transA, transB, ...kernelChoice(v) }), [m, n]) }))
    },
    expected: once(() => {
      const { a, b } = host()
      return { c: { want: matmulRef(a, b, m, n, k, { transA, transB }), tol: { abs: matmulTolerance(k, a, b) }, shape: [m, n] } }
    }),
  }
}

/** Texture-limit cases: K past it (weights fall back to a buffer), N wider than one texture (parts), M taller (x in row chunks). */
function pastTextureLimit(rt: GpuRuntime): KernelCase<LinearVariant>[] {
  const maxTex = rt.limits.maxTextureDimension2D
  return [
    linearCase({ m: 2, n: 16, k: maxTex + 4, note: "K past the texture limit" }),
    linearCase({ m: 3, n: 4 * maxTex + 20, k: 3, bias: true, note: "N wider than one texture: two parts" }),
    linearCase({ m: maxTex + 50, n: 16, k: 64, addTo: true, note: "M taller than a texture: x in chunks of rows" }),
    linearCase({ m: maxTex + 50, n: 20, k: 6, bias: true, note: "M taller than a texture, N not a multiple of 16" }),
  ]
}

export const linearOp: KernelOp<LinearVariant> = {
  op: "linear",
  variants: () => LINEAR_VARIANTS,
  variantsAgree: true,
  cases: (rt) => [
    linearCase({ m: 1, n: 1, k: 1 }),
    linearCase({ m: 1, n: 37, k: 29, note: "M=1, K not a multiple of 4" }),
    linearCase({ m: 3, n: 5, k: 7 }),
    linearCase({ m: 16, n: 16, k: 8, note: "the last M on the cpu kernel's few-rows block" }),
    linearCase({ m: 17, n: 33, k: 12, note: "the first M on its big block" }),
    linearCase({ m: 67, n: 45, k: 30 }),
    linearCase({ m: 130, n: 70, k: 64, note: "past one workgroup tile in both directions" }),
    linearCase({ m: 33, n: 17, k: 1031, note: "large odd K" }),
    linearCase({ m: 20, n: 40, k: 1500, note: "large K" }),
    linearCase({ m: 37, n: 21, k: 19, bias: true }),
    linearCase({ m: 37, n: 21, k: 19, addTo: true }),
    linearCase({ m: 37, n: 21, k: 19, bias: true, addTo: true }),
    linearCase({ m: 35, n: 23, k: 13, bias: true }),
    // N a multiple of 16: the cpu kernel writes y in place, or a scratch added into addTo (vec4 pass).
    linearCase({ m: 37, n: 32, k: 20, bias: true }),
    linearCase({ m: 70, n: 48, k: 20, bias: true, addTo: true }),
    linearCase({ m: 5, n: 32, k: 20, bias: true, addTo: true }),
    linearCase({ m: 41, n: 50, k: 24, partCols: 16, bias: true }),
    linearCase({ m: 19, n: 30, k: 8, partCols: 16, addTo: true }),
    linearCase({ m: 19, n: 64, k: 8, partCols: 32, addTo: true, bias: true }),
    linearCase({ m: 6, n: 6, k: 8, lead: [2, 3], note: "x with leading dims [2, 3]" }),
    ...pastTextureLimit(rt),
  ],
}

export const matmulOp: KernelOp<MatmulKernelVariant> = {
  op: "matmul",
  variants: () => MATMUL_VARIANTS,
  variantsAgree: true,
  cases: () =>
    ([[false, false], [false, true], [true, false], [true, true]] as const).flatMap(([transA, transB]) =>
      ([[1, 9, 6], [45, 27, 13], [70, 66, 130], [9, 11, 1027]] as const).map(([m, n, k]) => matmulCase({ m, n, k, transA, transB })),
    ),
  references: [
    {
      name: "matmulRef matches a hand-computed product, with and without transposes",
      run: () => ({
        // [2×3]·[3×2], then the same operands stored transposed.
        "A·B": { got: matmulRef([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], 2, 2, 3), want: [58, 64, 139, 154], tol: {} },
        "Aᵀᵀ·Bᵀᵀ": { got: matmulRef([1, 4, 2, 5, 3, 6], [7, 9, 11, 8, 10, 12], 2, 2, 3, { transA: true, transB: true }), want: [58, 64, 139, 154], tol: {} },
      }),
    },
  ],
}
