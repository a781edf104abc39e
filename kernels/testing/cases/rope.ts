/** Table cases of applyRope: angle precision to positions past 4M, head and rotary sizes, n̂, m, per-layer tables. */
import { type RopeTable, defaultInvFreq } from "../../rope-table.ts"
import { type GpuRopeTable, type RopeOptions, applyRope, releaseRopeTable, uploadRopeTable } from "../../rope.ts"
import { ropeCosSinRef, ropeRef } from "../../rope.ref.ts"
import type { GpuRuntime } from "../../runtime.ts"
import type { Tensor } from "../../tensor.ts"
import { type Expected, type KernelCase, type KernelOp, SINGLE, launcher, once } from "../kernel-case.ts"
import { uniform } from "../random.ts"

/** Angle difference wrapped to (−π, π]. */
export const wrapAngle = (a: number): number => a - 2 * Math.PI * Math.round(a / (2 * Math.PI))

/** Rotates x in place; x is the output. */
function rotate(rt: GpuRuntime, x: Tensor, positions: Tensor, table: GpuRopeTable, opts: RopeOptions): { x: Tensor } {
  applyRope(rt, x, positions, table, opts)
  return { x }
}

/** LongRoPE-like table: θ_i / λ_i with λ rising linearly from 1 to `maxFactor`. */
function longTable(rotaryDim: number, base: number, maxFactor: number): RopeTable {
  const orig = defaultInvFreq(base, rotaryDim)
  const invFreq = orig.map((t, i) => t / (1 + ((maxFactor - 1) * i) / Math.max(1, orig.length - 1)))
  return { rotaryDim, invFreq, originalInvFreq: orig, startTokens: 0, attentionScale: 1 }
}

const PRECISION_POSITIONS = [0, 1, 2, 4095, 4096, 2 ** 20 + 3, 2_000_000, 2_097_151, 4_194_303, 4_194_304 + 12_345, 16_777_217, 2 ** 31 + 7, 2 ** 32 - 1]

/**
 * Unit inputs (x_i = 1, x_{i+half} = 0) make the kernel output (m·cos, m·sin) of every angle directly.
 * Past ~2^23 the float64 reference n·θ itself rounds by up to ½ ulp (4.8e-7 rad at 2^32), well inside 1e-5.
 */
function precisionCase(base: number, maxFactor: number): KernelCase {
  const headDim = 128, half = 64
  const table = longTable(headDim, base, maxFactor)
  const T = PRECISION_POSITIONS.length
  const ref = once(() => PRECISION_POSITIONS.flatMap((n) => Array.from({ length: half }, (_, i) => ropeCosSinRef(table, 0, n, i))))
  return {
    name: `angle precision, base ${base}, factors up to ${maxFactor}, head 128, positions 0 … 2^32−1`,
    dtype: "f32",
    setup(rt) {
      const x = new Float32Array(T * headDim)
      for (let t = 0; t < T; t++) x.fill(1, t * headDim, t * headDim + half)
      const tx = rt.upload(x, [T, headDim]), tp = rt.upload(Uint32Array.from(PRECISION_POSITIONS))
      const gt = uploadRopeTable(rt, table, 1)
      const run = () => {
        applyRope(rt, tx, tp, gt, { heads: 1, headDim, layer: 0 })
        return { "cos, sin": tx }
      }
      // The kernel's angle, on the branch nearest the reference's (angles are defined mod 2π).
      const view = ({ "cos, sin": out }: Readonly<Record<string, Float32Array>>) => ({
        "cos, sin": out!,
        angle: Float64Array.from(ref(), (r, k) => {
          const t = Math.floor(k / half), i = k % half
          const want = wrapAngle(r.angle)
          return want + wrapAngle(Math.atan2(out![t * headDim + half + i]!, out![t * headDim + i]!) - want)
        }),
      })
      return launcher(rt, [tx, tp], run, { view, cleanup: () => releaseRopeTable(rt, gt) })
    },
    expected: once(() => {
      const cs = new Float64Array(T * headDim)
      ref().forEach((r, k) => {
        const t = Math.floor(k / half), i = k % half
        cs[t * headDim + i] = r.cos
        cs[t * headDim + half + i] = r.sin
      })
      return {
        // The DESIGN's contract: about 1e-5 rad against float64 at every position up to at least 4M.
        angle: { want: ref().map((r) => wrapAngle(r.angle)), tol: { abs: 1e-5 }, shape: [T, half] },
        "cos, sin": { want: cs, tol: { abs: 2e-6 }, shape: [T, headDim] },
      }
    }),
  }
}

export interface RopeParams {
  readonly name: string
  readonly heads: number
  readonly headDim: number
  readonly rotaryDim: number
  readonly T: number
  readonly layers?: number
  readonly layer?: number
  readonly startTokens?: number
  readonly scale?: number
}

/** Per-layer LongRoPE-like factors from a seeded stream (layer l divides θ_i by up to 1 + 3.7·(l+1)). */
function randomTable(p: RopeParams, r: () => number): RopeTable {
  const orig = defaultInvFreq(1e4, p.rotaryDim)
  const layers = p.layers ?? 1
  const perLayer = Array.from({ length: layers }, (_, l) => orig.map((t, i) => t / (1 + (l + 1) * 3.7 * r() * (i / orig.length))))
  return { rotaryDim: p.rotaryDim, invFreq: layers === 1 ? perLayer[0]! : perLayer, originalInvFreq: orig, startTokens: p.startTokens ?? 0, attentionScale: p.scale ?? 1 }
}

export function ropeCase(p: RopeParams): KernelCase {
  const D = p.heads * p.headDim
  const opts = { heads: p.heads, headDim: p.headDim, layer: p.layer ?? 0 }
  const host = once(() => {
    const r = uniform(p.headDim * 31 + p.T)
    const table = randomTable(p, r)
    const x = new Float32Array(p.T * D).map(() => r() * 2 - 1)
    // Packed documents: positions restart; some small (below start tokens), some past 2M.
    const positions = Uint32Array.from({ length: p.T }, (_, t) => (t % 4 === 3 ? 2_000_000 + t * 977 : t % 5))
    return { table, x, positions }
  })
  // Dims past rotaryDim of each head pass through: they must be bit-exact copies.
  const passThrough = (v: ArrayLike<number>): Float32Array => {
    const out: number[] = []
    for (let t = 0; t < p.T; t++) for (let h = 0; h < p.heads; h++) for (let d = p.rotaryDim; d < p.headDim; d++) out.push(v[t * D + h * p.headDim + d]!)
    return Float32Array.from(out)
  }
  return {
    name: p.name,
    dtype: "f32",
    setup(rt) {
      const { table, x, positions } = host()
      const tx = rt.upload(x, [p.T, D]), tp = rt.upload(positions)
      const gt = uploadRopeTable(rt, table, p.layers ?? 1)
      return launcher(rt, [tx, tp], () => rotate(rt, tx, tp, gt, opts), {
        view: ({ x }) => ({ x: x!, "pass-through dims": passThrough(x!) }),
        cleanup: () => releaseRopeTable(rt, gt),
      })
    },
    expected: once(() => {
      const { table, x, positions } = host()
      const out: Record<string, Expected> = {
        // |x| ≤ 1, |m| ≤ 1.3: cos/sin within ~3e-7 plus f32 rounding of two products and a sum.
        x: { want: ropeRef(x, positions, table, opts), tol: { abs: 2e-6 }, shape: [p.T, D] },
      }
      if (p.rotaryDim < p.headDim) out["pass-through dims"] = { want: passThrough(x), tol: {} }
      return out
    }),
  }
}

/** Start tokens take the original frequencies and no scale, and each layer its own factors. */
export function startTokensTable(): RopeTable {
  const orig = defaultInvFreq(1e4, 16)
  return { rotaryDim: 16, invFreq: [orig.map((t) => t / 2), orig.map((t) => t / 8)], originalInvFreq: orig, startTokens: 4, attentionScale: 1.5 }
}
export const START_TOKEN_POSITIONS = Uint32Array.from([0, 3, 4, 100, 3])
export const startTokensInput = (): Float32Array => new Float32Array(5 * 16).map((_, k) => Math.sin(k))

function startTokensCase(layer: number): KernelCase {
  const table = startTokensTable()
  const opts = { heads: 1, headDim: 16, layer }
  return {
    name: `start tokens 4 and scale 1.5, per-layer factors, layer ${layer} of 2`,
    dtype: "f32",
    setup(rt) {
      const x = startTokensInput()
      const tx = rt.upload(x, [5, 16]), tp = rt.upload(START_TOKEN_POSITIONS)
      const gt = uploadRopeTable(rt, table, 2)
      return launcher(rt, [tx, tp], () => rotate(rt, tx, tp, gt, opts), {
        view: ({ x }) => ({ x: x!, "row at position 0": x!.subarray(0, 16) }),
        cleanup: () => releaseRopeTable(rt, gt),
      })
    },
    expected: once(() => {
      const x = startTokensInput()
      return {
        x: { want: ropeRef(x, START_TOKEN_POSITIONS, table, opts), tol: { abs: 2e-6 }, shape: [5, 16] },
        // Position 0 (< n̂) is the identity: no rotation, no scale.
        "row at position 0": { want: x.subarray(0, 16), tol: { abs: 1e-7 } },
      }
    }),
  }
}

export const ropeOp: KernelOp = {
  op: "rope",
  variants: () => SINGLE,
  cases: () => [
    ...([[1e4, 1], [5e5, 1], [1e4, 64.3], [1e6, 7.7]] as const).map(([base, f]) => precisionCase(base, f)),
    ropeCase({ name: "head 16", heads: 3, headDim: 16, rotaryDim: 16, T: 13 }),
    ropeCase({ name: "head 32", heads: 2, headDim: 32, rotaryDim: 32, T: 9 }),
    ropeCase({ name: "head 64, per-layer invFreq (layer 2 of 3)", heads: 5, headDim: 64, rotaryDim: 64, T: 11, layers: 3, layer: 2 }),
    ropeCase({ name: "head 96, start tokens 5 and scale 1.19", heads: 4, headDim: 96, rotaryDim: 96, T: 17, startTokens: 5, scale: 1.1902 }),
    ropeCase({ name: "head 128, T 67 (not a multiple of 64)", heads: 2, headDim: 128, rotaryDim: 128, T: 67 }),
    ropeCase({ name: "partial rotary 72 of 96 (Phi-style 0.75·d, half 36 → vec4 path)", heads: 3, headDim: 96, rotaryDim: 72, T: 7, scale: 1.3 }),
    ropeCase({ name: "partial rotary 32 of 64", heads: 2, headDim: 64, rotaryDim: 32, T: 5 }),
    ropeCase({ name: "odd shapes: head 18, rotary 10 (scalar path)", heads: 3, headDim: 18, rotaryDim: 10, T: 7, startTokens: 2, scale: 1.2 }),
    ropeCase({ name: "head 20, rotary 12 (half 6: scalar path), per-layer", heads: 2, headDim: 20, rotaryDim: 12, T: 6, layers: 2, layer: 1 }),
    startTokensCase(0),
    startTokensCase(1),
  ],
}
