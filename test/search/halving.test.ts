// The budget-aware strategy: successive halving over fidelity, measured against `evolutionary`.
import { describe, expect, test } from "bun:test"
import { evolutionary } from "../../plugins/search/evolutionary.ts"
import { halvingCost, successiveHalving, type HalvingParams, type HalvingState } from "../../plugins/search/halving.ts"
import { fullEvaluationsToTarget } from "../../plugins/search/measure.ts"
import { isValid } from "../../plugins/search/space.ts"
import { smoothLandscape } from "../../plugins/search/synthetic.ts"
import type { SearchContext } from "../../plugins/search/types.ts"
import { driveOn, initVectors, roundTrip } from "./harness.ts"

// The paper's shape: d/2 = 64 factors, 8× extension, fitness on 5 samples at the target length;
// the cheap rungs are 1 sample at L/4 and 2 samples at L/2.
const D = 64
const S = 8
const full = { samples: 5, length: 32768 }
const land = smoothLandscape({ dims: D, scale: S, full })
const ctx: SearchContext = {
  dims: D,
  scale: S,
  fidelity: full,
  fidelities: [
    { samples: 1, length: 8192 },
    { samples: 2, length: 16384 },
  ],
  seed: 42,
  init: initVectors(D, S, 20, 46), // LLaMA2's ramp indices for the YaRN-like one
}

const drive = driveOn(land)

// The reference: LongRoPE's search with the paper's defaults (1344 full-length evaluations).
const evo = drive(evolutionary, ctx, {})
const target = evolutionary.best(evo)?.fitness ?? Number.NaN
const evoFirstHit = fullEvaluationsToTarget(evo, target) ?? 0

describe("successive-halving", () => {
  test("reaches the evolutionary search's final fitness with ≤ 1/4 of its full-length evaluations", () => {
    const budget = Math.floor(evo.history.length / 4)
    expect(budget).toBe(336)
    const rows: string[] = []
    for (const seed of [42, 1, 2, 3]) {
      const h = drive(successiveHalving, ctx, { seed, targetFitness: target, maxFullEvaluations: budget })
      const best = successiveHalving.best(h)
      if (best === undefined) throw new Error("no best")
      expect(best.fitness).toBeLessThanOrEqual(target)
      expect(h.fullEvaluations).toBeLessThanOrEqual(budget)
      const hit = fullEvaluationsToTarget(h, target) ?? Number.POSITIVE_INFINITY
      // It stops in the generation of the first hit (which spends ceil(8/4) = 2 full evaluations).
      expect(hit).toBeLessThanOrEqual(h.fullEvaluations)
      expect(hit).toBeGreaterThan(h.fullEvaluations - 2)
      const p = successiveHalving.progress(h)
      rows.push(`seed ${seed}: full ${h.fullEvaluations} (first hit #${hit}), all ${p.evaluations}, cost ${halvingCost(h).toFixed(0)} full-equivalents, best ${best.fitness.toFixed(4)}`)
    }
    console.log(`evolutionary: 1344 full evaluations (target first hit at #${evoFirstHit}), best ${target.toFixed(4)}\n  successive-halving ${rows.join("\n  successive-halving ")}`)
  }, 120_000) // ~5 s on 2 quiet cores, 35–50 s at load average 11 on 2 shared ones

  test("control: evolutionary cut to the same budget (64 + 8 × 32 = 320) does not reach the target", () => {
    const cut = drive(evolutionary, ctx, { iterations: 8 })
    expect(cut.history.length).toBe(320)
    expect(evolutionary.best(cut)?.fitness ?? 0).toBeGreaterThan(target)
    expect(fullEvaluationsToTarget(cut, target)).toBeUndefined()
  })

  test("candidates climb the rungs: most evaluations are cheap, full ones never exceed the budget", () => {
    const h = drive(successiveHalving, ctx, { maxFullEvaluations: 40 })
    expect(h.fullEvaluations).toBe(40)
    const byRung = [0, 1, 2].map((r) => h.trials.filter((t) => t.rung === r).length)
    expect(byRung[2]).toBe(40)
    expect(byRung[0] as number).toBeGreaterThan(3 * (byRung[1] as number))
    expect(byRung[1] as number).toBeGreaterThan(byRung[2] as number)
    expect(h.trials.every((t) => isValid(h.genes, t.genome))).toBe(true)
    // The init vectors go straight to full fidelity in generation 0 (ids 0..2); every other
    // full-fidelity trial was first evaluated at both cheaper rungs.
    expect(h.trials.filter((t) => t.id < 3).map((t) => t.rung)).toEqual([2, 2, 2])
    for (const t of h.trials.filter((x) => x.rung === 2 && x.id >= 3)) {
      const key = t.genome.factors.join(",")
      expect(h.trials.some((x) => x.rung === 0 && x.genome.factors.join(",") === key)).toBe(true)
      expect(h.trials.some((x) => x.rung === 1 && x.genome.factors.join(",") === key)).toBe(true)
    }
  })

  test("each candidate carries its rung's fidelity", () => {
    let s = successiveHalving.init(ctx, {})
    const seen: number[] = []
    for (let k = 0; k < 6; k++) {
      const { state, candidates } = successiveHalving.propose(s)
      const f = candidates[0]?.fidelity
      expect(candidates.every((c) => c.fidelity === f)).toBe(true)
      seen.push(f?.length ?? 0)
      s = successiveHalving.observe(state, candidates.map((c) => ({ id: c.id, fitness: land.fitness(c.genome, c.fidelity) })))
    }
    // generation 0: the init vectors at full fidelity; then each generation climbs the ladder
    expect(seen).toEqual([32768, 8192, 16384, 32768, 8192, 16384])
  })

  test("interrupted and restored from JSON after every batch: identical final result", () => {
    const params: Partial<HalvingParams> = { maxFullEvaluations: 30 }
    const straight = drive(successiveHalving, ctx, params)
    const resumed = drive(successiveHalving, ctx, params, (s: HalvingState) => roundTrip(s))
    expect(JSON.stringify(resumed)).toBe(JSON.stringify(straight))
  })
})
