// The evolutionary strategy end to end on a synthetic landscape: determinism, resume, improvement.
import { describe, expect, test } from "bun:test"
import { evolutionary, type EvolutionaryParams, type EvolutionaryState, type Member } from "../../plugins/search/evolutionary.ts"
import { sameGenome } from "../../plugins/search/grid.ts"
import { getStrategy, longrope2 } from "../../plugins/search/index.ts"
import { defaultAttentionScale, defaultStartToken } from "../../plugins/search/params.ts"
import { isValid, PAPER_START_TOKENS } from "../../plugins/search/space.ts"
import { rampFactors, smoothLandscape } from "../../plugins/search/synthetic.ts"
import type { SearchContext } from "../../plugins/search/types.ts"
import { driveOn, initVectors, roundTrip } from "./harness.ts"

const D = 32
const S = 8
const full = { samples: 5, length: 32768 }
const land = smoothLandscape({ dims: D, scale: S, full })
const ctx: SearchContext = {
  dims: D,
  scale: S,
  fidelity: full,
  seed: 42,
  init: initVectors(D, S, 10, 23),
}
const small: Partial<EvolutionaryParams> = { populationSize: 16, iterations: 6, parents: 8, mutants: 4, crossovers: 4 }

const drive = driveOn(land)

describe("evolutionary", () => {
  test("paper defaults: 64 + 40 × 32 = 1344 evaluations, and the search beats every init vector", () => {
    const s = drive(evolutionary, ctx, {})
    const p = evolutionary.progress(s)
    expect(p.evaluations).toBe(1344)
    expect(p.generation).toBe(41)
    expect(s.population.length).toBe(64)
    const best = evolutionary.best(s)
    if (best === undefined) throw new Error("no best")
    const initBest = Math.min(...ctx.init.map((g) => land.fitness(g, full)))
    expect(best.fitness).toBeLessThan(initBest - 0.1)
    // No two individuals ever evaluated are the same point.
    const h = s.history
    let duplicates = 0
    for (let i = 0; i < h.length; i++) for (let j = i + 1; j < h.length; j++) if (sameGenome((h[i] as Member).genome, (h[j] as Member).genome)) duplicates++
    expect(duplicates).toBe(0)
    expect(h.every((m) => isValid(s.genes, m.genome))).toBe(true)
  })

  test("elitism: the best fitness never gets worse from one generation to the next", () => {
    let last = Number.POSITIVE_INFINITY
    drive(evolutionary, ctx, small, (s) => {
      const b = evolutionary.best(s)?.fitness ?? Number.POSITIVE_INFINITY
      expect(b).toBeLessThanOrEqual(last)
      expect(s.population[0] !== undefined).toBe(true)
      last = b
      return s
    })
  })

  test("same seed → identical run; another seed → a different one", () => {
    const a = drive(evolutionary, ctx, small)
    const b = drive(evolutionary, ctx, small)
    const c = drive(evolutionary, { ...ctx, seed: 7 }, small)
    expect(JSON.stringify(a)).toBe(JSON.stringify(b))
    expect(JSON.stringify(a.history)).not.toBe(JSON.stringify(c.history))
  })

  test("interrupted after every generation and restored from JSON: identical final result", () => {
    const params: Partial<EvolutionaryParams> = { ...small, startToken: { values: PAPER_START_TOKENS, topParents: 2, mutantTries: 2 }, attentionScale: { min: 1, max: 1.3, step: 0.01, sigma: 0.03 } }
    const straight = drive(evolutionary, ctx, params)
    for (const k of [0, 2, 5]) {
      const resumed = drive(evolutionary, ctx, params, (s, step) => (step === k ? roundTrip(s) : s))
      expect(JSON.stringify(resumed)).toBe(JSON.stringify(straight))
    }
    const all = drive(evolutionary, ctx, params, (s) => roundTrip(s))
    expect(evolutionary.best(all)).toEqual(evolutionary.best(straight) as never)
  })

  test("interrupted between propose and observe: the same batch is proposed again", () => {
    const s0 = evolutionary.init(ctx, small)
    const first = evolutionary.propose(s0)
    const again = evolutionary.propose(roundTrip(first.state))
    expect(again.candidates).toEqual(first.candidates as never)
    expect(() => evolutionary.observe(first.state, [])).toThrow(/no result/)
  })

  test("start-token gene: every n̂ comes from the set, top parents are tried with the whole set", () => {
    const values = [0, 1, 2, 4, 8, 16, 64]
    const s = drive(evolutionary, ctx, { ...small, startToken: { values, topParents: 2, mutantTries: 3 } })
    expect(s.history.every((m) => m.genome.startToken !== undefined && values.includes(m.genome.startToken))).toBe(true)
    // The landscape prefers n̂ ≈ 3: the search must have moved off the init n̂ = 0.
    expect(evolutionary.best(s)?.genome.startToken).not.toBe(0)
    const best = evolutionary.best(s)
    if (best === undefined) throw new Error("no best")
    const tried = s.history.filter((m) => m.genome.factors.every((x, i) => x === best.genome.factors[i])).map((m) => m.genome.startToken)
    expect(new Set(tried).size).toBeGreaterThan(1)
  })

  test("attention-scale gene moves toward the landscape's optimum (1.1)", () => {
    const s = drive(evolutionary, ctx, { ...small, iterations: 15, attentionScale: { min: 1, max: 1.4, step: 0.01, sigma: 0.03 } })
    const m = evolutionary.best(s)?.genome.attentionScale
    expect(m !== undefined && Math.abs(m - 1.1) < 0.05).toBe(true)
  })

  test("gene shorthands: true = the defaults, false = off, anything else names the expected shape", () => {
    const on = evolutionary.init(ctx, { ...small, startToken: true, attentionScale: true })
    expect(on.genes.startToken).toEqual(defaultStartToken)
    // s = 8: m ∈ [1, 1 + ln 8 / 4] = [1, 1.52]
    expect(on.genes.attentionScale).toEqual({ min: 1, max: 1.52, step: 0.01, sigma: 0.02 })
    expect(on.genes.attentionScale).toEqual(defaultAttentionScale(S))
    const off = evolutionary.init(ctx, { ...small, startToken: false, attentionScale: false })
    expect(off.genes.startToken).toBeUndefined()
    expect(off.genes.attentionScale).toBeUndefined()
    expect(() => evolutionary.init(ctx, { ...small, attentionScale: 1.2 as never })).toThrow(/search\.evolutionary\.attentionScale: expected true, false, null or \{ min, max, step, sigma \}, got 1\.2/)
    expect(() => evolutionary.init(ctx, { ...small, startToken: [0, 4] as never })).toThrow(/search\.evolutionary\.startToken: expected true, false, null or \{ values, topParents, mutantTries \}/)
  })

  test("dim_piece_mono and longrope2 runs stay inside their spaces and improve", () => {
    const piece = drive(evolutionary, ctx, { ...small, space: "dim_piece_mono" })
    expect(piece.history.every((m) => isValid(piece.genes, m.genome))).toBe(true)
    const lr2ctx: SearchContext = { ...ctx, init: [{ factors: rampFactors(D, S, 10, 23) }] }
    const lr2 = drive(longrope2, lr2ctx, { ...small, criticalDim: 20 })
    expect(lr2.genes.space.kind).toBe("longrope2")
    expect(lr2.history.every((m) => isValid(lr2.genes, m.genome))).toBe(true)
    const first = lr2.history[0]?.fitness ?? 0
    expect((longrope2.best(lr2)?.fitness ?? Infinity) < first).toBe(true)
    expect(getStrategy("longrope2")).toBe(longrope2 as never)
  })

  test("params are validated with the field named", () => {
    expect(() => evolutionary.init(ctx, { parents: 0 })).toThrow(/parents/)
    expect(() => evolutionary.init(ctx, { space: "longrope2" })).toThrow(/criticalDim/)
    expect(() => evolutionary.init({ ...ctx, init: [{ factors: [1, 2] }] }, {})).toThrow(/factors/)
  })

  test("a failed evaluation (NaN/Infinity) is stored JSON-safe and ranks last", () => {
    const s0 = evolutionary.init(ctx, small)
    const { state, candidates } = evolutionary.propose(s0)
    const s1: EvolutionaryState = evolutionary.observe(state, candidates.map((c, i) => ({ id: c.id, fitness: i === 0 ? Number.NaN : 10 + i })))
    expect(roundTrip(s1)).toEqual(s1)
    expect(evolutionary.progress(s1).population.at(-1)?.id).toBe(candidates[0]?.id as number)
  })
})
