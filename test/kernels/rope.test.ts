import { describe, expect, test } from "bun:test"
import { applyRope, releaseRopeTable, turnsFixedPoint, uploadRopeTable } from "../../kernels/rope.ts"
import { ropeCosSinRef, ropeRef } from "../../kernels/rope.ref.ts"
import { type RopeTable, defaultInvFreq } from "../../kernels/rope-table.ts"
import { gpu } from "../gpu-shared.ts"

const rng = (seed: number) => {
  let s = seed >>> 0
  return (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

/** Angle difference wrapped to (−π, π]. */
const wrap = (a: number): number => {
  const r = a - 2 * Math.PI * Math.round(a / (2 * Math.PI))
  return r
}

/** LongRoPE-like table: θ_i / λ_i with λ rising from 1 to ~`maxFactor`. */
function longTable(rotaryDim: number, base: number, opts: Partial<RopeTable> & { maxFactor?: number } = {}): RopeTable {
  const orig = defaultInvFreq(base, rotaryDim)
  const maxFactor = opts.maxFactor ?? 1
  const inv = orig.map((t, i) => t / (1 + ((maxFactor - 1) * i) / Math.max(1, orig.length - 1)))
  return { rotaryDim, invFreq: opts.invFreq ?? inv, originalInvFreq: orig, startTokens: opts.startTokens ?? 0, attentionScale: opts.attentionScale ?? 1 }
}

const POSITIONS = [0, 1, 2, 4095, 4096, 2 ** 20 + 3, 2_000_000, 2_097_151, 4_194_303, 4_194_304 + 12_345, 16_777_217, 2 ** 31 + 7, 2 ** 32 - 1]

describe("rope angle precision", () => {
  // Unit inputs (x_i = 1, x_{i+half} = 0) make the kernel output (m·cos, m·sin) of every angle directly.
  for (const [base, maxFactor] of [[1e4, 1], [5e5, 1], [1e4, 64.3], [1e6, 7.7]] as const) {
    test(`base ${base}, factors up to ${maxFactor}: angle ≤ 1e-5 rad, cos/sin ≤ 2e-6 at positions up to 2^32−1`, async () => {
      const rt = await gpu()
      const headDim = 128, half = 64
      const table = longTable(headDim, base, { maxFactor })
      const T = POSITIONS.length
      const x = new Float32Array(T * headDim)
      for (let t = 0; t < T; t++) for (let i = 0; i < half; i++) x[t * headDim + i] = 1
      const tx = rt.upload(x, [T, headDim]), tp = rt.upload(Uint32Array.from(POSITIONS))
      const gt = uploadRopeTable(rt, table, 1)
      applyRope(rt, tx, tp, gt, { heads: 1, headDim, layer: 0 })
      const out = await rt.read(tx)
      // Past ~2^23 the float64 reference n·θ itself rounds by up to ½ ulp (4.8e-7 rad at 2^32), so the
      // error up to 4.2M is logged on its own.
      let maxAngle = 0, maxCs = 0, worst = "", upTo4M = 0
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < half; i++) {
          const c = out[t * headDim + i]!, s = out[t * headDim + half + i]!
          const ref = ropeCosSinRef(table, 0, POSITIONS[t]!, i)
          const ea = Math.abs(wrap(Math.atan2(s, c) - ref.angle))
          const ec = Math.max(Math.abs(c - ref.cos), Math.abs(s - ref.sin))
          if (ea > maxAngle) { maxAngle = ea; worst = `n=${POSITIONS[t]} i=${i}` }
          maxCs = Math.max(maxCs, ec)
          if (POSITIONS[t]! <= 4_206_649) upTo4M = Math.max(upTo4M, ea)
        }
      }
      console.log(`rope base ${base} λ≤${maxFactor}: max angle error ${maxAngle.toExponential(2)} rad (${worst}), ${upTo4M.toExponential(2)} up to 4.2M, max cos/sin error ${maxCs.toExponential(2)}`)
      expect(maxAngle).toBeLessThan(1e-5)
      expect(maxCs).toBeLessThan(2e-6)
      releaseRopeTable(rt, gt)
      rt.release(tx, tp)
    })
  }

  test("the tolerance discriminates: a plain f32 n·θ misses it at 2M", () => {
    const n = 2_000_000
    // θ_1 of base 1e4, d 128 is not a power of two: the f32 product itself rounds.
    const th = defaultInvFreq(1e4, 128)[1]!
    expect(Math.abs(wrap(Math.fround(n * Math.fround(th)) - n * th))).toBeGreaterThan(1e-3)
  })

  test("fixed-point turns round-trip θ/(2π) to ~1e-19", () => {
    for (const th of [1, 0.75, 1e-4, 1.3e-7, 7.9, 100]) {
      const [hi, lo] = turnsFixedPoint(th)
      const f = th / (2 * Math.PI)
      expect(Math.abs(hi / 2 ** 32 + lo / 2 ** 64 - (f - Math.floor(f)))).toBeLessThan(1e-16)
    }
  })
})

interface Case {
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

const CASES: readonly Case[] = [
  { name: "head 16", heads: 3, headDim: 16, rotaryDim: 16, T: 13 },
  { name: "head 32", heads: 2, headDim: 32, rotaryDim: 32, T: 9 },
  { name: "head 64, per-layer invFreq (layer 2 of 3)", heads: 5, headDim: 64, rotaryDim: 64, T: 11, layers: 3, layer: 2 },
  { name: "head 96, start tokens 5 and scale 1.19", heads: 4, headDim: 96, rotaryDim: 96, T: 17, startTokens: 5, scale: 1.1902 },
  { name: "head 128, T 67 (not a multiple of 64)", heads: 2, headDim: 128, rotaryDim: 128, T: 67 },
  { name: "partial rotary 72 of 96 (Phi-style 0.75·d, half 36 → vec4 path)", heads: 3, headDim: 96, rotaryDim: 72, T: 7, scale: 1.3 },
  { name: "partial rotary 32 of 64", heads: 2, headDim: 64, rotaryDim: 32, T: 5 },
  { name: "odd shapes: head 18, rotary 10 (scalar path)", heads: 3, headDim: 18, rotaryDim: 10, T: 7, startTokens: 2, scale: 1.2 },
  { name: "head 20, rotary 12 (half 6: scalar path), per-layer", heads: 2, headDim: 20, rotaryDim: 12, T: 6, layers: 2, layer: 1 },
]

describe("applyRope vs float64 reference", () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const rt = await gpu()
      const r = rng(c.headDim * 31 + c.T)
      const orig = defaultInvFreq(1e4, c.rotaryDim)
      const layers = c.layers ?? 1
      const perLayer = Array.from({ length: layers }, (_, l) => orig.map((t, i) => t / (1 + (l + 1) * 3.7 * r() * (i / orig.length))))
      const table: RopeTable = {
        rotaryDim: c.rotaryDim,
        invFreq: layers === 1 ? perLayer[0]! : perLayer,
        originalInvFreq: orig,
        startTokens: c.startTokens ?? 0,
        attentionScale: c.scale ?? 1,
      }
      const D = c.heads * c.headDim
      const x = new Float32Array(c.T * D).map(() => r() * 2 - 1)
      // Packed documents: positions restart; some small (below start tokens), some past 2M.
      const positions = Uint32Array.from({ length: c.T }, (_, t) => (t % 4 === 3 ? 2_000_000 + t * 977 : t % 5))
      const tx = rt.upload(x, [c.T, D]), tp = rt.upload(positions)
      const gt = uploadRopeTable(rt, table, layers)
      const opts = { heads: c.heads, headDim: c.headDim, layer: c.layer ?? 0 }
      applyRope(rt, tx, tp, gt, opts)
      const got = await rt.read(tx)
      const want = ropeRef(x, positions, table, opts)
      let err = 0
      for (let k = 0; k < want.length; k++) err = Math.max(err, Math.abs(got[k]! - want[k]!))
      // |x| ≤ 1, |m| ≤ 1.3: cos/sin within ~3e-7 plus f32 rounding of two products and a sum.
      expect(err).toBeLessThan(2e-6)
      // Dims past rotaryDim are bit-exact copies.
      for (let t = 0; t < c.T; t++) for (let h = 0; h < c.heads; h++) for (let d = c.rotaryDim; d < c.headDim; d++) {
        const k = t * D + h * c.headDim + d
        expect(got[k]).toBe(x[k]!)
      }
      releaseRopeTable(rt, gt)
      rt.release(tx, tp)
    })
  }

  test("start tokens use the original frequencies and no scale; the wrong layer would be detected", async () => {
    const rt = await gpu()
    const orig = defaultInvFreq(1e4, 16)
    const table: RopeTable = { rotaryDim: 16, invFreq: [orig.map((t) => t / 2), orig.map((t) => t / 8)], originalInvFreq: orig, startTokens: 4, attentionScale: 1.5 }
    const positions = Uint32Array.from([0, 3, 4, 100, 3])
    const x = new Float32Array(5 * 16).map((_, k) => Math.sin(k))
    const tp = rt.upload(positions)
    const gt = uploadRopeTable(rt, table, 2)
    for (const layer of [0, 1]) {
      const tx = rt.upload(x, [5, 16])
      applyRope(rt, tx, tp, gt, { heads: 1, headDim: 16, layer })
      const got = await rt.read(tx)
      const want = ropeRef(x, positions, table, { heads: 1, headDim: 16, layer })
      const other = ropeRef(x, positions, table, { heads: 1, headDim: 16, layer: 1 - layer })
      let err = 0, diff = 0
      for (let k = 0; k < want.length; k++) {
        err = Math.max(err, Math.abs(got[k]! - want[k]!))
        diff = Math.max(diff, Math.abs(got[k]! - other[k]!))
      }
      expect(err).toBeLessThan(2e-6)
      expect(diff).toBeGreaterThan(1e-2)
      // Rows at positions 0 and 3 (< n̂) are the same for both layers and unscaled: position 0 is the identity.
      for (let d = 0; d < 16; d++) expect(Math.abs(got[d]! - x[d]!)).toBeLessThan(1e-7)
      rt.release(tx)
    }
    const tx = rt.upload(x, [5, 16])
    expect(() => applyRope(rt, tx, tp, gt, { heads: 1, headDim: 16, layer: 2 })).toThrow(/layer 2/)
    expect(() => applyRope(rt, tx, tx, gt, { heads: 1, headDim: 16, layer: 0 })).toThrow(/positions/)
    releaseRopeTable(rt, gt)
    rt.release(tp, tx)
  })
})
