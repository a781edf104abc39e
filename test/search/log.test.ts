// Search logs: ropeway's log, LongRoPE's log JSON (export, import, resume) and factor CSVs.
import { describe, expect, test } from "bun:test"
import { evolutionary, type EvolutionaryParams, type EvolutionaryState } from "../../plugins/search/evolutionary.ts"
import {
  appendToLog,
  decodeGenome,
  emptySearchLog,
  encodeGenome,
  evolutionaryToLongRoPELog,
  factorsFromCsv,
  formatFactorsCsv,
  parseFactorsCsv,
  parseLongRoPELog,
  resultCsvName,
  resumeFromLongRoPELog,
  stringifyLongRoPELog,
} from "../../plugins/search/log.ts"
import { rampFactors, smoothLandscape } from "../../plugins/search/synthetic.ts"
import type { SearchContext } from "../../plugins/search/types.ts"

const D = 16
const S = 4
const full = { samples: 5, length: 16384 }
const land = smoothLandscape({ dims: D, scale: S, full })
const ctx: SearchContext = { dims: D, scale: S, fidelity: full, seed: 42, init: [{ factors: rampFactors(D, S, 4, 11) }] }
const small: Partial<EvolutionaryParams> = { populationSize: 12, iterations: 5, parents: 6, mutants: 3, crossovers: 3 }

function step(s: EvolutionaryState): EvolutionaryState {
  const { state, candidates } = evolutionary.propose(s)
  return evolutionary.observe(state, candidates.map((c) => ({ id: c.id, fitness: land.fitness(c.genome, c.fidelity) })))
}
function runTo(params: Partial<EvolutionaryParams>, generations: number, from?: EvolutionaryState): EvolutionaryState {
  let s = from ?? evolutionary.init(ctx, params)
  while (!evolutionary.done(s) && s.generation < generations) s = step(s)
  return s
}

describe("LongRoPE log JSON", () => {
  test("export → text → import round trip keeps iteration, population and history", () => {
    const s = runTo(small, 3)
    const log = evolutionaryToLongRoPELog(s)
    expect(log.iteration).toBe(2)
    expect(log.population.length).toBe(6)
    expect(log.history.length).toBe(s.history.length)
    const back = parseLongRoPELog(stringifyLongRoPELog(log))
    expect(back).toEqual(log)
    // LongRoPE's population is the parents, best first.
    const ppl = back.population.map((e) => e[1] as number)
    expect([...ppl].sort((a, b) => a - b)).toEqual(ppl)
  })

  test("reads Python's bare Infinity / NaN and a log without history", () => {
    const text = `{"iteration": 3, "population": [[[1.0, 2.0], Infinity], [[1.0, 1.5], 7.5], [[1.0, 1.2], NaN]]}`
    const log = parseLongRoPELog(text)
    expect(log.iteration).toBe(3)
    expect(log.population.map((e) => e[1])).toEqual([null, 7.5, null])
    expect(log.history).toEqual([])
    expect(() => parseLongRoPELog(`{"iteration": 1, "population": [[1, 2]]}`)).toThrow(/population/)
  })

  test("genome layout: dim_piece_mono puts α, β first; n̂ leads the factors, m trails", () => {
    const s = evolutionary.init(ctx, { ...small, space: "dim_piece_mono", startToken: { values: [0, 4], topParents: 1, mutantTries: 1 }, attentionScale: { min: 1, max: 1.2, step: 0.01, sigma: 0.02 } })
    const g = s.init[0]
    if (g === undefined) throw new Error("no init")
    const v = encodeGenome(s.genes, g)
    expect(v.length).toBe(2 + 1 + D + 1)
    expect(v.slice(0, 2)).toEqual([g.alpha as number, g.beta as number])
    expect(decodeGenome(s.genes, v)).toEqual(g)
    expect(() => decodeGenome(s.genes, v.slice(1))).toThrow(/expected/)
  })

  test("the evolutionary strategy resumes from an imported log and finishes the search", () => {
    const s = runTo(small, 3)
    const log = parseLongRoPELog(stringifyLongRoPELog(evolutionaryToLongRoPELog(s)))
    let r = resumeFromLongRoPELog(ctx, small, log)
    expect(r.generation).toBe(3)
    expect(r.history.length).toBe(s.history.length)
    const before = evolutionary.best(r)?.fitness ?? Infinity
    r = runTo(small, 100, r)
    expect(evolutionary.done(r)).toBe(true)
    expect(r.history.length).toBe(s.history.length + 3 * 6) // child generations 3, 4, 5
    expect(evolutionary.best(r)?.fitness ?? Infinity).toBeLessThanOrEqual(before)
    // Nothing already in the imported history is evaluated again.
    const seen = new Set(s.history.map((m) => m.genome.factors.join(",")))
    for (const m of r.history.slice(s.history.length)) expect(seen.has(m.genome.factors.join(","))).toBe(false)
    // A finished search exports an iteration past the last, so a resume evaluates nothing.
    const finished = resumeFromLongRoPELog(ctx, small, evolutionaryToLongRoPELog(r))
    expect(evolutionary.done(finished)).toBe(true)
    expect(evolutionary.propose(finished).candidates.length).toBe(0)
  })

  test("a log from another space is refused; out-of-space individuals only count as seen", () => {
    const decreasing: [number[], number] = [Array.from({ length: D }, (_, i) => D - i), 5]
    expect(() => resumeFromLongRoPELog(ctx, small, { iteration: 0, population: [decreasing], history: [] })).toThrow(/is in the search space/)
    const good: [number[], number] = [rampFactors(D, S, 4, 11), 6]
    const r = resumeFromLongRoPELog(ctx, small, { iteration: 0, population: [decreasing, good], history: [decreasing, good] })
    expect(r.population.length).toBe(1)
    expect(r.history.length).toBe(2)
  })
})

describe("ropeway search log", () => {
  test("one entry per generation with population, best, counts and time; re-appending replaces", () => {
    let log = emptySearchLog("evolutionary")
    let s = evolutionary.init(ctx, small)
    let t = 0
    while (!evolutionary.done(s)) {
      s = step(s)
      log = appendToLog(log, evolutionary.progress(s), (t += 1.5))
    }
    expect(log.entries.length).toBe(6)
    const last = log.entries.at(-1)
    expect(last?.evaluations).toBe(12 + 5 * 6)
    expect(last?.seconds).toBe(9)
    expect(last?.best?.fitness).toBe(evolutionary.best(s)?.fitness as number)
    expect(last?.population[0]?.fitness).toBe(last?.best?.fitness as number)
    log = appendToLog(log, evolutionary.progress(s), 99)
    expect(log.entries.length).toBe(6)
    expect(JSON.parse(JSON.stringify(log))).toEqual(log)
  })
})

describe("factor CSVs", () => {
  test("one float per line round trip, comma rows, per-layer matrices", () => {
    const f = rampFactors(D, S, 4, 11).map((x) => x * 1.0001)
    const text = formatFactorsCsv(f)
    expect(text.split("\n").length).toBe(D + 1)
    expect(factorsFromCsv(text, D)).toEqual(f)
    expect(factorsFromCsv("1.0, 1.5, 2.0\n")).toEqual([1, 1.5, 2])
    expect(factorsFromCsv("1.000000000000000000e+00\n2.5e+00\n")).toEqual([1, 2.5])
    expect(parseFactorsCsv("1,2\n1,2\n1,2\n")).toEqual([[1, 2], [1, 2], [1, 2]])
    expect(factorsFromCsv("1,2\n1,2\n")).toEqual([1, 2])
    expect(() => factorsFromCsv("1,2\n1,3\n")).toThrow(/differ/)
    expect(() => factorsFromCsv("1\nx\n")).toThrow(/not a number/)
    expect(() => factorsFromCsv("1\n2\n", 3)).toThrow(/expected 3/)
  })

  test("LongRoPE's file names", () => {
    expect(resultCsvName(0)).toBe("result_it000.csv")
    expect(resultCsvName(39)).toBe("result_it039.csv")
    expect(resultCsvName("final")).toBe("result_final.csv")
  })
})
