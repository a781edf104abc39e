// The perplexity protocols' window and label arithmetic against small cases worked out by hand.
import { describe, expect, test } from "bun:test"
import { defaultInvFreq } from "../../kernels/rope-table.ts"
import {
  aggregate, type Doc, logprobIndex, methodScaling, onTopScaling, planPasses, protocolWindows, tableKey, windowNll,
} from "../../plugins/eval/protocols.ts"
import { piFactors, resolveRope, type RopeSpec, yarnFactors } from "../../plugins/rope/index.ts"
import type { ChosenTable } from "../../plugins/rope/index.ts"

describe("protocol windows", () => {
  test("truncate: BOS + the first L−1 tokens, all scored", () => {
    expect(protocolWindows("truncate", 10, 4, true)).toEqual([{ from: 0, to: 3, scoreFrom: 0, scoreTo: 3 }])
    // no BOS: L document tokens, the first has no context
    expect(protocolWindows("truncate", 10, 4, false)).toEqual([{ from: 0, to: 4, scoreFrom: 1, scoreTo: 4 }])
    // a short document: its whole length
    expect(protocolWindows("truncate", 2, 4, true)).toEqual([{ from: 0, to: 2, scoreFrom: 0, scoreTo: 2 }])
  })

  test("sliding: windows every stride, only new tokens scored", () => {
    // n=10, L=5 (BOS + 4 tokens), stride 2
    expect(protocolWindows("sliding", 10, 5, true, 2)).toEqual([
      { from: 0, to: 4, scoreFrom: 0, scoreTo: 4 },
      { from: 2, to: 6, scoreFrom: 4, scoreTo: 6 },
      { from: 4, to: 8, scoreFrom: 6, scoreTo: 8 },
      { from: 6, to: 10, scoreFrom: 8, scoreTo: 10 },
    ])
    // the last window is cut at the document's end: n=9 → ends at 9 after scoring 1 new token
    expect(protocolWindows("sliding", 9, 5, true, 2).at(-1)).toEqual({ from: 6, to: 9, scoreFrom: 8, scoreTo: 9 })
    // without BOS and stride = window: non-overlapping, each window's first token unscored
    expect(protocolWindows("sliding", 8, 4, false, 4)).toEqual([
      { from: 0, to: 4, scoreFrom: 1, scoreTo: 4 },
      { from: 4, to: 8, scoreFrom: 5, scoreTo: 8 },
    ])
    // every token scored exactly once (with BOS)
    const ws = protocolWindows("sliding", 37, 8, true, 3)
    const seen = new Array(37).fill(0)
    for (const w of ws) for (let t = w.scoreFrom; t < w.scoreTo; t++) seen[t]++
    expect(seen.every((c) => c === 1)).toBe(true)
    // its first window is the truncate window
    expect(ws[0]).toEqual(protocolWindows("truncate", 37, 8, true)[0]!)
  })

  test("chunked: whole chunks of L, BOS replaces the first token, second half scored", () => {
    // n=10, L=4: 2 chunks; chunk c feeds [BOS, d(4c+1..4c+3)], first = 2, scores d(4c+3)
    expect(protocolWindows("chunked", 10, 4, true)).toEqual([
      { from: 1, to: 4, scoreFrom: 3, scoreTo: 4 },
      { from: 5, to: 8, scoreFrom: 7, scoreTo: 8 },
    ])
    // L=8: scores positions 4..6 predicting tokens 5..7 → 3 tokens (n_ctx − 1 − n_ctx/2)
    expect(protocolWindows("chunked", 8, 8, true)).toEqual([{ from: 1, to: 8, scoreFrom: 5, scoreTo: 8 }])
    expect(protocolWindows("chunked", 8, 8, false)).toEqual([{ from: 0, to: 8, scoreFrom: 5, scoreTo: 8 }])
    expect(protocolWindows("chunked", 7, 8, true)).toEqual([])
  })

  test("log-prob index of a document token inside a pass", () => {
    // pass [BOS, d5, d6, d7]: lp[0] = ln p(d5 | BOS), lp[2] = ln p(d7 | BOS d5 d6)
    expect(logprobIndex({ from: 5 }, 5, true)).toBe(0)
    expect(logprobIndex({ from: 5 }, 7, true)).toBe(2)
    // pass [d5, d6, d7]: lp[0] = ln p(d6 | d5)
    expect(logprobIndex({ from: 5 }, 6, false)).toBe(0)
  })

  test("window NLL and the two aggregations", () => {
    const lp = [-1, -2, -3, -4]
    // window from 0 with BOS scoring tokens 1..3 → lp[1..3]
    expect(windowNll({ from: 0, to: 4, scoreFrom: 1, scoreTo: 4 }, lp, true)).toEqual({ sum: 9, count: 3 })
    const ws = [{ sum: 1, count: 1 }, { sum: 9, count: 3 }]
    expect(aggregate("truncate", ws)).toBeCloseTo(Math.exp((1 + 3) / 2), 12) // every window weighs the same
    expect(aggregate("sliding", ws)).toBeCloseTo(Math.exp(2), 12)
    expect(aggregate("chunked", ws)).toBeCloseTo(Math.exp(10 / 4), 12) // every token weighs the same
    expect(() => windowNll({ from: 0, to: 9, scoreFrom: 0, scoreTo: 9 }, lp, true)).toThrow(/missing/)
  })
})

describe("methods and pass sharing", () => {
  const spec: RopeSpec = { headDim: 16, rotaryDim: 16, base: 10000, maxPositions: 256, originalMaxPositions: undefined, numLayers: 2, scaling: undefined }
  const table = (method: "none" | "pi" | "ntk" | "yarn", L: number): ChosenTable => {
    const s = Math.max(1, L / 256)
    const sc = methodScaling(method, s, 256)
    if (sc === "model") throw new Error("unused")
    return resolveRope({ ...spec, originalMaxPositions: 256, scaling: sc })(L)
  }

  test("baselines at scale s are the HF rope_scaling objects", () => {
    expect(methodScaling("pi", 4, 256)).toEqual({ rope_type: "linear", factor: 4 })
    expect(methodScaling("ntk", 4, 256)).toEqual({ rope_type: "ntk", factor: 4 })
    expect(methodScaling("yarn", 4, 256)).toEqual({ rope_type: "yarn", factor: 4, original_max_position_embeddings: 256 })
    expect(methodScaling("none", 4, 256)).toBeUndefined()
    // PI at 4× divides every frequency by 4
    const pi = table("pi", 1024)
    const plain = defaultInvFreq(10000, 16)
    expect(Array.from(pi.invFreq as Float64Array)).toEqual(Array.from(plain, (x) => x / 4))
  })

  test("equal tables share passes; at scale 1 every method is plain RoPE", () => {
    const keys = (["none", "pi", "ntk", "yarn"] as const).map((m) => tableKey(table(m, 256)))
    expect(new Set(keys).size).toBe(1)
    expect(tableKey(table("pi", 512))).not.toBe(tableKey(table("none", 512)))
    expect(tableKey(table("none", 512))).toBe(tableKey(table("none", 2048)))
  })

  test("plan: truncate rides on sliding's first window, plain RoPE serves every length from one pass", () => {
    const docs: Doc[] = [{ id: "a", ids: Array.from({ length: 40 }, (_, i) => i) }, { id: "b", ids: Array.from({ length: 40 }, (_, i) => 39 - i) }]
    const req = (method: "none" | "pi", length: number, protocol: "truncate" | "sliding" | "chunked", stride?: number) =>
      ({ method, length, protocol, table: table(method, length * 32), stride })
    // lengths ×32 in the table so 8 and 16 differ in scale for pi (256·… below/above L0)
    const { passes, measurements } = planPasses(
      [req("none", 8, "truncate"), req("none", 16, "truncate"), req("none", 16, "sliding", 8), req("pi", 8, "truncate"), req("pi", 16, "truncate")],
      docs,
      true,
    )
    // none: per doc, start 0 (to 15, serving truncate 8/16 and sliding's first window) + sliding starts 8, 16, 24, 32
    // pi: two different tables (scale 1 vs 2) → one pass each per doc
    const noneKey = tableKey(table("none", 256))
    const nonePasses = passes.filter((p) => p.key.startsWith(noneKey))
    expect(nonePasses.map((p) => [p.doc, p.from, p.to])).toEqual([[0, 0, 15], [1, 0, 15], [0, 8, 23], [0, 16, 31], [0, 24, 39], [0, 32, 40], [1, 8, 23], [1, 16, 31], [1, 24, 39], [1, 32, 40]])
    // pi at 8 (scale 1) equals plain RoPE, so it rides on the `none` passes too; pi at 16 needs its own
    expect(passes.length).toBe(nonePasses.length + 2)
    const truncate8 = measurements[0]!
    expect(truncate8.windows.map((w) => passes[w.pass]!.to)).toEqual([15, 15])
    expect(truncate8.windows.map((w) => w.window.to)).toEqual([7, 7])
  })
})

describe("model+pi / model+yarn: PI or YaRN on top of the model's longest factor set", () => {
  const lamFt = Array.from({ length: 8 }, (_, i) => 1 + i * 0.5)
  const spec: RopeSpec = {
    headDim: 16, rotaryDim: 16, base: 10000, maxPositions: 1024, originalMaxPositions: 256, numLayers: 2,
    scaling: {
      rope_type: "longrope-research", original_max_position_embeddings: 256, mscale: "su",
      sets: [{ max_length: 256, factors: new Array(8).fill(1) }, { max_length: 1024, factors: lamFt, start_tokens: 2 }],
    },
  }
  const factorsOf = (t: ChosenTable) => Array.from(defaultInvFreq(10000, 16), (f, i) => f / (t.invFreq as Float64Array)[i]!)

  test("λ = λ_ft ⊙ λ_rel at s_rel = L / L_ft; m follows the set's policy at L; n̂ kept", () => {
    const pi = onTopScaling(spec, "model+pi", 4096)
    expect([pi.relScale, pi.window]).toEqual([4, 1024])
    const t = resolveRope({ ...spec, scaling: pi.scaling })(4096)
    factorsOf(t).forEach((f, i) => expect(f).toBeCloseTo(lamFt[i]! * 4, 10))
    expect(t.attentionScale).toBeCloseTo(Math.sqrt(1 + Math.log(16) / Math.log(256)), 12) // su at 4096 / 256
    expect(t.startTokens).toBe(2)
    const yarn = resolveRope({ ...spec, scaling: onTopScaling(spec, "model+yarn", 4096).scaling })(4096)
    const rel = yarnFactors({ rotaryDim: 16, base: 10000, originalLength: 1024 }, 4)
    factorsOf(yarn).forEach((f, i) => expect(f).toBeCloseTo(lamFt[i]! * rel[i]!, 10))
    // the ramp keeps the fastest dims as they are and interpolates the slowest by s_rel: not PI
    expect(rel[0]).toBe(1)
    expect(rel[7]).toBeCloseTo(piFactors({ rotaryDim: 16 }, 4)[7]!, 12)
  })

  test("up to L_ft nothing is added: the model's own longest set", () => {
    const own = resolveRope(spec)(1024)
    for (const m of ["model+pi", "model+yarn"] as const) {
      const r = onTopScaling(spec, m, 1024)
      expect(r.relScale).toBe(1)
      expect(tableKey(resolveRope({ ...spec, scaling: r.scaling })(1024))).toBe(tableKey(own))
    }
  })

  test("a model without a factor set is refused, naming the method", () => {
    expect(() => onTopScaling({ ...spec, scaling: undefined }, "model+pi", 2048)).toThrow("method model+pi needs a model with a factor set")
  })
})
