// Wilson intervals against published values, the bootstrap's determinism and width, perplexity
// aggregation, and the Estimate schema's round trip through JSON.
import { describe, expect, test } from "bun:test"
import { Schema } from "effect"
import { Rng } from "../../common/rng.ts"
import { Estimate, bootstrap, mean, meanInterval, perplexityInterval, perplexityOf, quantileSorted, wilson } from "../../plugins/eval/intervals.ts"

describe("wilson", () => {
  test("matches Newcombe (1998), Table I, method 3 (score interval without continuity correction)", () => {
    const cases: Array<[number, number, number, number]> = [
      [81, 263, 0.2553, 0.3662],
      [15, 148, 0.0624, 0.1605],
      [0, 20, 0, 0.1611],
      [1, 29, 0.0061, 0.1718],
    ]
    for (const [k, n, lo, hi] of cases) {
      const e = wilson(k, n)
      expect(e.value).toBe(k / n)
      expect(e.lo).toBeCloseTo(lo, 4)
      expect(e.hi).toBeCloseTo(hi, 4)
      expect(e).toMatchObject({ n, successes: k, level: 0.95, method: "wilson", unit: "trials" })
    }
  })
  test("all correct keeps a width (Wald would give [1, 1]) and the ends are exact", () => {
    const e = wilson(50, 50)
    expect(e.hi).toBe(1)
    expect(e.lo).toBeCloseTo(0.9287, 4)
    expect(wilson(0, 7).lo).toBe(0)
  })
  test("wider at higher levels and narrower with more trials", () => {
    expect(wilson(9, 10, { level: 0.99 }).lo).toBeLessThan(wilson(9, 10).lo)
    expect(wilson(90, 100).hi - wilson(90, 100).lo).toBeLessThan(wilson(9, 10).hi - wilson(9, 10).lo)
  })
  test("bad counts and unsupported levels are refused", () => {
    expect(() => wilson(3, 0)).toThrow("trials")
    expect(() => wilson(4, 3)).toThrow("successes")
    expect(() => wilson(1.5, 3)).toThrow("successes")
    expect(() => wilson(1, 3, { level: 0.93 })).toThrow("level 0.93")
  })
})

describe("bootstrap", () => {
  const draws = (n: number, seed: number) => {
    const rng = Rng.seeded(seed)
    // sums of 12 uniforms: mean 6, variance 1
    return Array.from({ length: n }, () => Array.from({ length: 12 }, () => rng.float()).reduce((a, x) => a + x, 0))
  }
  test("type-7 quantiles", () => {
    expect(quantileSorted([1, 2, 3, 4], 0.5)).toBe(2.5)
    expect(quantileSorted([1, 2, 3, 4], 0)).toBe(1)
    expect(quantileSorted([1, 2, 3, 4], 1)).toBe(4)
    expect(quantileSorted([5], 0.3)).toBe(5)
  })
  test("deterministic under a seed; another seed moves the ends, not the value", () => {
    const xs = draws(40, 1)
    const a = meanInterval(xs, { unit: "trials", seed: 7 })
    expect(meanInterval(xs, { unit: "trials", seed: 7 })).toEqual(a)
    const b = meanInterval(xs, { unit: "trials", seed: 8 })
    expect(b.value).toBe(a.value)
    expect(b.lo).not.toBe(a.lo)
    expect(a).toMatchObject({ n: 40, unit: "trials", method: "bootstrap-percentile", replicates: 2000, seed: 7, level: 0.95 })
  })
  test("the interval of a mean is about ±1.96·sd/√n around it", () => {
    const xs = draws(400, 2)
    const m = mean(xs)
    const sd = Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1))
    const e = meanInterval(xs, { unit: "trials", seed: 3, replicates: 4000 })
    const half = (1.96 * sd) / Math.sqrt(xs.length)
    expect(e.lo).toBeLessThan(m)
    expect(e.hi).toBeGreaterThan(m)
    expect(Math.abs(m - e.lo - half) / half).toBeLessThan(0.1)
    expect(Math.abs(e.hi - m - half) / half).toBeLessThan(0.1)
  })
  test("one unit gives [value, value]; no unit or a non-finite statistic is refused", () => {
    expect(meanInterval([3], { unit: "trials" })).toMatchObject({ value: 3, lo: 3, hi: 3, n: 1 })
    expect(() => meanInterval([], { unit: "trials" })).toThrow("no units")
    expect(() => bootstrap([1, 2], () => Number.NaN, { unit: "x" })).toThrow("NaN")
  })
})

describe("perplexity", () => {
  const windows = [
    { doc: "a", sum: 10, count: 5 },
    { doc: "a", sum: 30, count: 10 },
    { doc: "b", sum: 8, count: 4 },
  ]
  test("window-mean and token-weighted aggregation", () => {
    expect(perplexityOf(windows, "window-mean")).toBeCloseTo(Math.exp((2 + 3 + 2) / 3), 12)
    expect(perplexityOf(windows, "token-weighted")).toBeCloseTo(Math.exp(48 / 19), 12)
    expect(perplexityOf([], "window-mean")).toBeNaN()
  })
  test("documents are resampled whole by default; windows on request", () => {
    const byDoc = perplexityInterval(windows, "window-mean", { seed: 1 })
    expect(byDoc).toMatchObject({ n: 2, unit: "documents", value: perplexityOf(windows, "window-mean") })
    const byWindow = perplexityInterval(windows, "window-mean", { seed: 1, resample: "windows" })
    expect(byWindow).toMatchObject({ n: 3, unit: "windows" })
    expect(byDoc.lo).toBeLessThanOrEqual(byDoc.value)
    expect(byDoc.hi).toBeGreaterThanOrEqual(byDoc.value)
  })
  test("correlated windows: resampling documents gives the wider (honest) interval", () => {
    // 8 documents of 6 windows each; windows of a document share its level
    const rng = Rng.seeded(5)
    const ws = Array.from({ length: 8 }, (_, d) => {
      const level = 1 + rng.float()
      return Array.from({ length: 6 }, () => ({ doc: d, sum: 10 * (level + 0.05 * rng.float()), count: 10 }))
    }).flat()
    const docs = perplexityInterval(ws, "window-mean", { seed: 2 })
    const wins = perplexityInterval(ws, "window-mean", { seed: 2, resample: "windows" })
    expect(docs.hi - docs.lo).toBeGreaterThan(1.5 * (wins.hi - wins.lo))
  })
})

describe("Estimate schema", () => {
  test("round-trips through JSON, and refuses lo > hi, n = 0 and unknown methods", () => {
    const decode = Schema.decodeUnknownSync(Estimate)
    for (const e of [wilson(7, 10), perplexityInterval([{ doc: 0, sum: 3, count: 2 }, { doc: 1, sum: 5, count: 2 }], "token-weighted")]) {
      const back = decode(JSON.parse(JSON.stringify(Schema.encodeSync(Estimate)(e))))
      expect(back).toEqual(e)
    }
    const ok = wilson(7, 10)
    expect(() => decode({ ...ok, lo: 0.9, hi: 0.8 })).toThrow("above hi")
    expect(() => decode({ ...ok, n: 0 })).toThrow()
    expect(() => decode({ ...ok, method: "wald" })).toThrow()
    expect(() => decode({ ...ok, level: 1 })).toThrow()
  })
})
