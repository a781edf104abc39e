// Pinned reference values of the rope factor helpers (longrope-method.md §1.4, §2.3, §7).
import { describe, expect, test } from "bun:test"
import {
  criticalDim,
  criticalDimRamp,
  dynamicLongropeFactors,
  mscale,
  ntkBase,
  ntkFactors,
  piFactors,
  rescaleFactors,
  yarnFactors,
  yarnInitFactors,
  yarnRamp,
  yarnRampMask,
} from "../../plugins/rope/factors.ts"

const llama2 = { rotaryDim: 128, base: 1e4, originalLength: 4096 }
const llama3 = { rotaryDim: 128, base: 5e5, originalLength: 8192 }
const phi3mini = { rotaryDim: 96, base: 1e4, originalLength: 4096 }

describe("YaRN ramp indices (§2.3)", () => {
  test("LLaMA2 d128 b1e4 L0 4096, β 32/1 → 20/46", () => expect(yarnRamp(llama2)).toEqual({ low: 20, high: 46 }))
  test("LLaMA3 b5e5 L0 8192 → 18/35", () => expect(yarnRamp(llama3)).toEqual({ low: 18, high: 35 }))
  test("Mistral β 128/2 → 11/41", () => expect(yarnRamp(llama2, { betaFast: 128, betaSlow: 2 })).toEqual({ low: 11, high: 41 }))
  test("Phi-3-mini d96 → 15/34", () => expect(yarnRamp(phi3mini)).toEqual({ low: 15, high: 34 }))
  test("truncate: false keeps the fractional range", () => {
    const { low, high } = yarnRamp(llama2, { truncate: false })
    expect(low).toBeCloseTo(20.94, 2)
    expect(high).toBeCloseTo(45.03, 2)
  })
  test("ramp mask clamps to [0, 1] and survives low == high", () => {
    expect(Array.from(yarnRampMask(2, 4, 6))).toEqual([0, 0, 0, 0.5, 1, 1])
    const m = yarnRampMask(3, 3, 5)
    expect(m[3]).toBe(0)
    expect(m[4]).toBe(1)
  })
  test("LongRoPE's 64x YaRN init for LLaMA2: 21 ones, then 3.42 … 64", () => {
    const f = yarnInitFactors(llama2, 64)
    expect(Array.from(f.slice(0, 21)).every((x) => x === 1)).toBe(true)
    expect(f[21]).toBeCloseTo(3.42, 2)
    expect(f[63]).toBe(64)
  })
  test("HF YaRN divisors blend inverse frequencies: λ = 1/(r/s + 1 − r)", () => {
    const f = yarnFactors(llama2, 16)
    expect(f[20]).toBe(1)
    expect(f[46]).toBe(16)
    const r = 13 / 26 // i = 33
    expect(f[33]).toBeCloseTo(1 / (r / 16 + 1 - r), 12)
  })
})

describe("mscale table (§1.4)", () => {
  const rows: [number, number, number, number][] = [
    [32, 4096, 1.1902, 1.3466],
    [64, 4096, 1.2247, 1.4159],
    [512, 4096, 1.3229, 1.6238],
    [16, 8192, 1.1435, 1.2773],
  ]
  for (const [s, L0, su, yarn] of rows) {
    test(`s=${s}, L0=${L0}: su ${su}, yarn ${yarn}`, () => {
      expect(mscale("su", s, L0).toFixed(4)).toBe(su.toFixed(4))
      expect(mscale("yarn", s, L0).toFixed(4)).toBe(yarn.toFixed(4))
    })
  }
  test("m = 1 when s ≤ 1; a number is fixed", () => {
    expect(mscale("su", 1, 4096)).toBe(1)
    expect(mscale("yarn", 0.5, 4096)).toBe(1)
    expect(mscale(1.12, 64, 4096)).toBe(1.12)
  })
})

describe("LongRoPE2 critical dimension (§7)", () => {
  test("LLaMA3-8B → 34", () => expect(criticalDim(llama3)).toBe(34))
  test("Phi-3-mini → 33", () => expect(criticalDim(phi3mini)).toBe(33))
  test("LLaMA2 → 45", () => expect(criticalDim(llama2)).toBe(45))
  test("ramp below cd: λ_i = λ_cd^(i/cd)", () => {
    const f = new Float64Array(8).fill(20)
    f[4] = 16
    const r = criticalDimRamp(f, 4)
    expect(Array.from(r.slice(0, 5))).toEqual([1, 2, 4, 8, 16].map((x, i) => (i === 0 ? 1 : Math.pow(16, i / 4))))
    expect(r[5]).toBe(20)
  })
})

describe("PI, NTK and LongRoPE re-targeting", () => {
  test("PI is s everywhere", () => expect(Array.from(piFactors({ rotaryDim: 8 }, 4))).toEqual([4, 4, 4, 4]))
  test("NTK divisors equal the base change base·s^(d/(d−2))", () => {
    const d = 64
    const s = 8
    const f = ntkFactors({ rotaryDim: d }, s)
    const b2 = ntkBase(1e4, d, s)
    for (let i = 0; i < d / 2; i++) {
      const theta = Math.pow(1e4, (-2 * i) / d)
      const theta2 = Math.pow(b2, (-2 * i) / d)
      expect(f[i]! / (theta / theta2)).toBeCloseTo(1, 12)
    }
    expect(f[0]).toBe(1)
    expect(f[d / 2 - 1]).toBeCloseTo(s, 10) // the lowest frequency is interpolated by exactly s
  })
  test("λ_i(L) = 1 + (λ_i − 1)(L/L0 − 1)/(s − 1)", () => {
    const f = Float64Array.from([1, 5, 17, 33])
    expect(Array.from(rescaleFactors(f, 32, 32))).toEqual([1, 5, 17, 33])
    expect(Array.from(rescaleFactors(f, 32, 1))).toEqual([1, 1, 1, 1])
    const mid = dynamicLongropeFactors(f, 32, 4096 * 16, 4096)
    expect(mid[2]).toBeCloseTo(1 + (16 * 15) / 31, 12)
    expect(Array.from(dynamicLongropeFactors(f, 32, 100, 4096))).toEqual([1, 1, 1, 1])
    expect(Array.from(dynamicLongropeFactors(f, 32, 4096 * 64, 4096))).toEqual([1, 5, 17, 33])
  })
})
