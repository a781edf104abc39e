// Each method against an independent float64 transcription of the transformers (or LongRoPE) formula.
import { describe, expect, test } from "bun:test"
import { invFreqAt } from "../../kernels/rope-table.ts"
import { registerRopeMethod, resolveRope, tableFactors, type RopeSpec } from "../../plugins/rope/index.ts"

const spec = (over: Partial<RopeSpec> & { scaling?: Record<string, unknown> | undefined }): RopeSpec => ({
  headDim: 64,
  rotaryDim: 64,
  base: 10000,
  maxPositions: 2048,
  originalMaxPositions: undefined,
  numLayers: 2,
  scaling: undefined,
  ...over,
})

/** HF's arange(0, dim, 2)/dim exponents, in float64. */
const exps = (d: number) => Array.from({ length: d / 2 }, (_, i) => (2 * i) / d)
const close = (a: ArrayLike<number>, b: ArrayLike<number>, rel = 1e-12) => {
  expect(a.length).toBe(b.length)
  for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!) / Math.abs(b[i]!)).toBeLessThanOrEqual(rel)
}
const inv = (t: ReturnType<ReturnType<typeof resolveRope>>) => invFreqAt(t, 0)

describe("default and linear", () => {
  test("default is base^(−2i/d), no scale", () => {
    const t = resolveRope(spec({}))(100)
    close(inv(t), exps(64).map((e) => 1 / Math.pow(1e4, e)))
    expect(t.attentionScale).toBe(1)
    expect(t.method).toBe("default")
  })
  test("linear divides every frequency by factor", () => {
    const t = resolveRope(spec({ scaling: { type: "linear", factor: 4 } }))(100)
    close(inv(t), exps(64).map((e) => 1 / Math.pow(1e4, e) / 4))
  })
})

describe("ntk (static)", () => {
  test("base' = base · factor^(d/(d−2)) at every length", () => {
    const r = resolveRope(spec({ scaling: { rope_type: "ntk", factor: 8 } }))
    const b = 1e4 * Math.pow(8, 64 / 62)
    close(inv(r(10)), exps(64).map((e) => 1 / Math.pow(b, e)))
    close(inv(r(100000)), inv(r(10)), 0)
  })
})

describe("dynamic NTK (HF)", () => {
  const r = resolveRope(spec({ scaling: { type: "dynamic", factor: 2 } }))
  const hf = (seqLen: number) => {
    const s = Math.max(seqLen, 2048)
    const b = 1e4 * Math.pow((2 * s) / 2048 - (2 - 1), 64 / 62)
    return exps(64).map((e) => 1 / Math.pow(b, e))
  }
  test("at or below max_position_embeddings: plain RoPE", () => {
    close(inv(r(1)), hf(1))
    close(inv(r(2048)), exps(64).map((e) => 1 / Math.pow(1e4, e)))
  })
  test("above: recomputed for the current length (seq_len = length)", () => {
    close(inv(r(2049)), hf(2049))
    close(inv(r(4096)), hf(4096))
    close(inv(r(10000)), hf(10000))
    expect(inv(r(10000))[1]!).toBeLessThan(inv(r(4096))[1]!)
    expect(r(4096).reason).toContain("4096 > max_position_embeddings 2048")
  })
  test("uses max_position_embeddings, not original_max_position_embeddings", () => {
    const r2 = resolveRope(spec({ originalMaxPositions: 512, scaling: { type: "dynamic", factor: 2 } }))
    close(inv(r2(1024)), hf(1024))
  })
})

describe("yarn (HF _compute_yarn_parameters)", () => {
  /** Independent float64 transcription of HF's function for one config. */
  function hfYarn(d: number, base: number, factor: number, L0: number, betaFast = 32, betaSlow = 1, truncate = true) {
    const corr = (rot: number) => (d * Math.log(L0 / (rot * 2 * Math.PI))) / (2 * Math.log(base))
    let low = corr(betaFast)
    let high = corr(betaSlow)
    if (truncate) [low, high] = [Math.floor(low), Math.ceil(high)]
    low = Math.max(low, 0)
    high = Math.min(high, d - 1)
    if (low === high) high += 0.001
    return exps(d).map((e, i) => {
      const pos = Math.pow(base, e)
      const extraFactor = 1 - Math.min(1, Math.max(0, (i - low) / (high - low)))
      return (1 / (factor * pos)) * (1 - extraFactor) + (1 / pos) * extraFactor
    })
  }
  test("Qwen-style config: factor 4, original 32768 in rope_scaling, d128 b1e6", () => {
    const s = spec({ headDim: 128, rotaryDim: 128, base: 1e6, maxPositions: 131072, scaling: { type: "yarn", factor: 4, original_max_position_embeddings: 32768 } })
    const t = resolveRope(s)(1000)
    close(inv(t), hfYarn(128, 1e6, 4, 32768))
    expect(t.attentionScale).toBeCloseTo(0.1 * Math.log(4) + 1, 15)
  })
  test("no original length: L0 = max_position_embeddings; beta and truncate options", () => {
    const t = resolveRope(spec({ scaling: { rope_type: "yarn", factor: 8, beta_fast: 16, beta_slow: 2, truncate: false } }))(5)
    close(inv(t), hfYarn(64, 1e4, 8, 2048, 16, 2, false))
  })
  test("explicit factor wins over max/original; missing factor is derived from them", () => {
    const a = resolveRope(spec({ maxPositions: 16384, originalMaxPositions: 2048, scaling: { type: "yarn", factor: 4 } }))(1)
    close(inv(a), hfYarn(64, 1e4, 4, 2048))
    const b = resolveRope(spec({ maxPositions: 16384, originalMaxPositions: 2048, scaling: { type: "yarn" } }))(1)
    close(inv(b), hfYarn(64, 1e4, 8, 2048))
  })
  test("attention_factor: explicit, else mscale/mscale_all_dim (DeepSeek), else 0.1 ln s + 1", () => {
    const at = (extra: Record<string, unknown>) => resolveRope(spec({ scaling: { type: "yarn", factor: 40, ...extra } }))(1).attentionScale
    expect(at({ attention_factor: 0.9 })).toBe(0.9)
    const g = (m: number) => 0.1 * m * Math.log(40) + 1
    expect(at({ mscale: 1, mscale_all_dim: 0.707 })).toBeCloseTo(g(1) / g(0.707), 15)
    expect(at({ mscale: 0.707, mscale_all_dim: 0.707 })).toBe(1)
    expect(at({ mscale: 0.707 })).toBeCloseTo(g(1), 15) // HF needs both to use them
  })
})

describe("llama3 (HF _compute_llama3_parameters)", () => {
  function hfLlama3(d: number, base: number, factor: number, lowF: number, highF: number, L0: number) {
    return exps(d).map((e) => {
      const f = 1 / Math.pow(base, e)
      const wavelen = (2 * Math.PI) / f
      const scaled = wavelen > L0 / lowF ? f / factor : f
      const smooth = (L0 / wavelen - lowF) / (highF - lowF)
      const medium = !(wavelen < L0 / highF) && !(wavelen > L0 / lowF)
      return medium ? ((1 - smooth) * scaled) / factor + smooth * scaled : scaled
    })
  }
  test("Llama 3.1 8B: factor 8, low 1, high 4, original 8192, b5e5 d128", () => {
    const s = spec({
      headDim: 128,
      rotaryDim: 128,
      base: 5e5,
      maxPositions: 131072,
      scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    })
    const t = resolveRope(s)(50)
    const ref = hfLlama3(128, 5e5, 8, 1, 4, 8192)
    close(inv(t), ref)
    const lambda = tableFactors(t) as Float64Array
    expect(lambda[0]).toBe(1) // high frequencies kept
    expect(lambda[63]).toBeCloseTo(8, 12) // low frequencies divided by factor
    const mid = Array.from(lambda).filter((x) => x > 1.0001 && x < 7.9999)
    expect(mid.length).toBeGreaterThan(0) // a smooth band in between
    expect(t.attentionScale).toBe(1)
  })
})

describe("longrope (HF, Phi-3)", () => {
  const short = Array.from({ length: 48 }, (_, i) => 1 + i / 47)
  const long = Array.from({ length: 48 }, (_, i) => 1 + (63 * i) / 47)
  const phi3 = (scaling: Record<string, unknown>, over: Partial<RopeSpec> = {}) =>
    spec({ headDim: 96, rotaryDim: 96, maxPositions: 131072, originalMaxPositions: 4096, numLayers: 32, scaling, ...over })
  const base = { type: "longrope", short_factor: short, long_factor: long }
  test("attention_factor = sqrt(1 + ln 32 / ln 4096) = 1.1902, on both sets", () => {
    const r = resolveRope(phi3(base))
    expect(r(100).attentionScale.toFixed(4)).toBe("1.1902")
    expect(r(100).attentionScale).toBeCloseTo(Math.sqrt(1 + Math.log(32) / Math.log(4096)), 15)
    expect(r(100000).attentionScale).toBe(r(100).attentionScale)
  })
  test("switch: 4096 → short, 4097 → long", () => {
    const r = resolveRope(phi3(base))
    const theta = exps(96).map((e) => 1 / Math.pow(1e4, e))
    close(inv(r(4096)), theta.map((t, i) => t / short[i]!))
    close(inv(r(4097)), theta.map((t, i) => t / long[i]!))
    expect(r(4096).reason).toContain("short_factor")
    expect(r(4096).reason).toContain("4096 ≤ original_max_position_embeddings 4096")
    expect(r(4097).reason).toContain("long_factor")
  })
  test("`su` is an alias; original length may sit inside rope_scaling", () => {
    const r = resolveRope(phi3({ ...base, type: "su", original_max_position_embeddings: 4096 }, { originalMaxPositions: undefined }))
    expect(r(4097).method).toBe("longrope")
    expect(r(4097).reason).toContain("long_factor")
  })
  test("explicit attention_factor; factor ≤ 1 gives 1; short/long_mscale override per set (vLLM)", () => {
    expect(resolveRope(phi3({ ...base, attention_factor: 1.3 }))(1).attentionScale).toBe(1.3)
    expect(resolveRope(phi3(base, { maxPositions: 4096 }))(1).attentionScale).toBe(1)
    const r = resolveRope(phi3({ ...base, short_mscale: 1.1, long_mscale: 1.243163121016122 }))
    expect(r(10).attentionScale).toBe(1.1)
    expect(r(5000).attentionScale).toBe(1.243163121016122)
    expect(r(5000).reason).toContain("long_mscale")
  })
  test("LongRoPE2 LLaMA3 config: 131072/8192 → 1.1435", () => {
    const r = resolveRope(
      spec({
        headDim: 128,
        rotaryDim: 128,
        base: 5e5,
        maxPositions: 131072,
        originalMaxPositions: 8192,
        scaling: { type: "longrope", short_factor: new Array(64).fill(1), long_factor: new Array(64).fill(16) },
      }),
    )
    expect(r(8192).attentionScale.toFixed(4)).toBe("1.1435")
  })
})

describe("longrope-research", () => {
  const d = 64
  const f = (x: number) => new Array(d / 2).fill(0).map((_, i) => 1 + ((x - 1) * i) / (d / 2 - 1))
  const research = (extra: Record<string, unknown>, sets: unknown[]) =>
    spec({ numLayers: 2, scaling: { rope_type: "longrope-research", original_max_position_embeddings: 2048, sets, ...extra } })
  test("more than two sets chosen by length bucket; mscale per set's scale", () => {
    const r = resolveRope(research({}, [
      { max_length: 2048, factors: f(1.5), mscale: 1 },
      { max_length: 8192, factors: f(4), start_tokens: 4 },
      { max_length: 65536, factors: f(32), mscale: "yarn" },
    ]))
    expect(r(2048).reason).toContain("set 0 of 3")
    expect(r(2048).attentionScale).toBe(1)
    expect(r(2049).reason).toContain("set 1 of 3")
    expect(r(2049).startTokens).toBe(4)
    expect(r(2049).attentionScale).toBeCloseTo(Math.sqrt(1 + Math.log(4) / Math.log(2048)), 15)
    expect(r(8193).attentionScale).toBeCloseTo(0.1 * Math.log(32) + 1, 15)
    expect(r(1e6).reason).toContain("beyond the last set")
    close(tableFactors(r(9000)) as Float64Array, f(32))
  })
  test("per-layer factors (layers × d/2)", () => {
    const r = resolveRope(research({}, [{ max_length: 8192, factors: [f(2), f(3)] }]))
    const t = r(100)
    expect(Array.isArray(t.invFreq)).toBe(true)
    close((tableFactors(t) as Float64Array[])[1]!, f(3))
    close(invFreqAt(t, 0), exps(d).map((e, i) => 1 / Math.pow(1e4, e) / f(2)[i]!))
  })
  test("critical-dim ramp and dynamic re-targeting", () => {
    const r = resolveRope(research({ critical_dim: 10 }, [{ max_length: 65536, factors: f(32) }]))
    const l = tableFactors(r(100)) as Float64Array
    const top = f(32)[10]!
    expect(l[5]).toBeCloseTo(Math.pow(top, 5 / 10), 12)
    expect(l[20]).toBeCloseTo(f(32)[20]!, 12)
    const auto = resolveRope(research({ critical_dim: "auto" }, [{ max_length: 65536, factors: f(32) }]))
    expect(auto(1).reason).toContain("critical dim 20") // ceil(32·ln(2048/2π)/ln 1e4) − 1 = ceil(20.1) − 1
    const dyn = resolveRope(research({ dynamic: true }, [{ max_length: 65536, factors: f(32) }]))
    const half = tableFactors(dyn(2048 * 16)) as Float64Array
    expect(half[31]).toBeCloseTo(1 + (31 * 15) / 31, 12)
    expect(dyn(2048 * 16).attentionScale).toBeCloseTo(Math.sqrt(1 + Math.log(16) / Math.log(2048)), 15)
    expect(Array.from(tableFactors(dyn(100)) as Float64Array).every((x) => x === 1)).toBe(true)
  })
})

describe("the registry is a plugin point", () => {
  test("a user's method with its own parameters resolves like a built-in", () => {
    registerRopeMethod({
      name: "test-halve",
      resolve: (s) => {
        const k = s.scaling?.["k"]
        if (typeof k !== "number") throw new Error("rope_scaling.k: expected a number")
        return (length) => ({
          rotaryDim: s.rotaryDim,
          invFreq: new Float64Array(s.rotaryDim / 2).fill(1 / k),
          originalInvFreq: new Float64Array(s.rotaryDim / 2).fill(1),
          startTokens: 0,
          attentionScale: 1,
          method: "test-halve",
          reason: `k=${k} at ${length}`,
        })
      },
    })
    const t = resolveRope(spec({ scaling: { rope_type: "test-halve", k: 2 } }))(7)
    expect(t.reason).toBe("k=2 at 7")
    expect(inv(t)[0]).toBe(0.5)
  })
})
