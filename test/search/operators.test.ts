// The genetic operators: mutation, crossover, duplicate rejection, breakpoints, longrope2's space.
import { describe, expect, test } from "bun:test"
import { allclose, GenomeIndex, gridValue, onGrid, sameGenome } from "../../plugins/search/grid.ts"
import { Rng } from "../../common/rng.ts"
import { crossover, isValid, longrope2Ramp, mutate, normalise, type Genes } from "../../plugins/search/space.ts"
import { rampFactors } from "../../plugins/search/synthetic.ts"
import type { Genome } from "../../plugins/search/types.ts"

const D = 32
const S = 8
const monoGenes = (extra: Partial<Genes> = {}): Genes => ({
  space: { kind: "dim_mono", dims: D, step: 0.01, lower: 1, upper: 10 },
  startToken: undefined,
  attentionScale: undefined,
  p: 0.3,
  mutation: "gene",
  ...extra,
})
const onGridParent: Genome = { factors: rampFactors(D, S, 8, 24).map((x) => gridValue(Math.round(x * 100), 0.01)) }
const nothingSeen = (): boolean => false
const defaults = { startToken: 0, attentionScale: 1 }

function isMonotone(f: readonly number[], strict = false): boolean {
  for (let i = 1; i < f.length; i++) if (strict ? !((f[i] as number) > (f[i - 1] as number)) : (f[i] as number) < (f[i - 1] as number)) return false
  return true
}

describe("rng", () => {
  test("same seed same stream, different seed different stream, state copies resume it", () => {
    const a = Rng.seeded(42)
    const b = Rng.seeded(42)
    const c = Rng.seeded(43)
    const xa = Array.from({ length: 5 }, () => a.float())
    expect(Array.from({ length: 5 }, () => b.float())).toEqual(xa)
    expect(Array.from({ length: 5 }, () => c.float())).not.toEqual(xa)
    const resumed = Rng.fromState(JSON.parse(JSON.stringify(a.state())))
    expect(resumed.float()).toBe(a.float())
    for (let i = 0; i < 1000; i++) {
      const u = a.float()
      expect(u >= 0 && u < 1).toBe(true)
      expect(a.int(0, 6)).toBeLessThan(7)
    }
  })
})

describe("dim_mono mutation", () => {
  test("stays monotone, on the 0.01 grid, within [1, upper], and changes the parent", () => {
    const genes = monoGenes()
    const rng = Rng.seeded(1)
    for (let k = 0; k < 300; k++) {
      const child = mutate(genes, onGridParent, rng, (g) => sameGenome(g, onGridParent))
      if (child === undefined) throw new Error("mutation failed")
      expect(isMonotone(child.factors)).toBe(true)
      expect(child.factors.every((x) => onGrid(x, 0.01))).toBe(true)
      expect(child.factors[0]).toBeGreaterThanOrEqual(1)
      expect(child.factors[D - 1]).toBeLessThanOrEqual(10)
      expect(allclose(child.factors, onGridParent.factors)).toBe(false)
    }
  })

  test("each changed gene lies between its neighbours' values (a gene-local move)", () => {
    const genes = monoGenes()
    const rng = Rng.seeded(2)
    const p = onGridParent.factors
    let changed = 0
    for (let k = 0; k < 200; k++) {
      const c = mutate(genes, onGridParent, rng, (g) => sameGenome(g, onGridParent))?.factors ?? []
      for (let i = 0; i < D; i++) {
        if (c[i] === p[i]) continue
        changed++
        // The new value is bounded by the neighbours' values, before or after their own mutation.
        const lo = i === 0 ? 1 : Math.min(p[i - 1] as number, c[i - 1] as number)
        const hi = i === D - 1 ? 10 : Math.max(p[i + 1] as number, c[i + 1] as number)
        expect(c[i] as number).toBeGreaterThanOrEqual(lo)
        expect(c[i] as number).toBeLessThanOrEqual(hi)
      }
    }
    // p = 0.3 per gene: about 0.3·D genes change per mutant (more than one, fewer than all).
    const mean = changed / 200
    expect(mean).toBeGreaterThan(0.15 * D)
    expect(mean).toBeLessThan(0.45 * D)
  })

  test("an off-grid parent: the genes that change land on the grid", () => {
    const genes = monoGenes()
    const parent: Genome = { factors: rampFactors(D, S, 8, 24).map((x) => x + 0.003) }
    const rng = Rng.seeded(3)
    for (let k = 0; k < 100; k++) {
      const c = mutate(genes, normalise(genes, parent, defaults), rng, nothingSeen)?.factors ?? []
      c.forEach((x, i) => {
        if (x !== parent.factors[i]) expect(onGrid(x, 0.01)).toBe(true)
      })
    }
  })

  test("'sweep' mode (the released code's mutation) also stays monotone and in bounds", () => {
    const genes = monoGenes({ mutation: "sweep" })
    const rng = Rng.seeded(4)
    for (let k = 0; k < 100; k++) {
      const c = mutate(genes, onGridParent, rng, (g) => sameGenome(g, onGridParent))
      expect(c !== undefined && isValid(genes, c)).toBe(true)
    }
  })

  test("duplicates are rejected against the whole history until the space is exhausted", () => {
    // 2 dims in [1, 1.03] at step 0.01: exactly 10 monotone vectors.
    const genes: Genes = { ...monoGenes(), space: { kind: "dim_mono", dims: 2, step: 0.01, lower: 1, upper: 1.03 } }
    const parent: Genome = { factors: [1.01, 1.02] }
    const index = new GenomeIndex([parent])
    const rng = Rng.seeded(5)
    const found: Genome[] = []
    for (let k = 0; k < 12; k++) {
      const c = mutate(genes, parent, rng, (g) => index.has(g), 200)
      if (c === undefined) break
      expect(index.has(c)).toBe(false)
      index.add(c)
      found.push(c)
    }
    // Reachable from the parent: 9 other monotone vectors, less (1.03, 1.03), since dim 0 is drawn
    // below the parent's dim 1 (1.02) before dim 1 moves.
    expect(found.length).toBe(8)
    expect(new Set(found.map((g) => g.factors.join(","))).size).toBe(8)
  })

  test("allclose uses numpy's tolerances", () => {
    expect(allclose([1, 2], [1 + 1e-6, 2])).toBe(true)
    expect(allclose([1, 2], [1.001, 2])).toBe(false)
    const index = new GenomeIndex([{ factors: [1, 2, 3] }])
    expect(index.has({ factors: [1, 2, 3 + 1e-7] })).toBe(true)
    expect(index.has({ factors: [1, 2, 3.01] })).toBe(false)
    expect(index.has({ factors: [1, 2, 3], startToken: 4 })).toBe(false)
  })
})

describe("crossover", () => {
  const genes = monoGenes()
  const p1: Genome = onGridParent
  const p2: Genome = { factors: p1.factors.map((x) => gridValue(Math.round(x * 100) + 1, 0.01)) }
  // Strictly increasing by 0.05 and shifted by one step: any single swapped gene keeps it monotone.
  const q1: Genome = { factors: Array.from({ length: D }, (_, i) => gridValue(100 + 5 * i, 0.01)) }
  const q2: Genome = { factors: q1.factors.map((x) => gridValue(Math.round(x * 100) + 1, 0.01)) }

  test("offspring genes come from p1 or p2; with p1, p2 in the history the first valid visit returns one swapped gene", () => {
    const rng = Rng.seeded(6)
    for (let k = 0; k < 200; k++) {
      const index = new GenomeIndex([q1, q2])
      const c = crossover(genes, q1, q2, rng, (g) => index.has(g), 20, sameGenome)
      if (c === undefined) throw new Error("no child")
      c.factors.forEach((x, i) => expect(x === q1.factors[i] || x === q2.factors[i]).toBe(true))
      const fromP2 = c.factors.filter((x, i) => x !== q1.factors[i]).length
      expect(fromP2).toBe(1)
      expect(isValid(genes, c)).toBe(true)
    }
    // With flat runs (ramp parents) a lone swap can break monotonicity, so children mix more genes
    // (or fall back to mutation); every child is still valid and new.
    for (let k = 0; k < 200; k++) {
      const index = new GenomeIndex([p1, p2])
      const c = crossover(genes, p1, p2, rng, (g) => index.has(g), 20, sameGenome)
      expect(c !== undefined && isValid(genes, c) && !index.has(c)).toBe(true)
    }
  })

  test("a non-monotone swap is not returned; later visits can still yield a valid child", () => {
    // p2 is far above p1 in the middle: swapping one middle gene breaks monotonicity unless neighbours follow.
    const far: Genome = { factors: p1.factors.map((x, i) => (i >= 10 && i < 20 ? Math.min(10, x + 3) : x)) }
    const rng = Rng.seeded(7)
    for (let k = 0; k < 100; k++) {
      const index = new GenomeIndex([p1, far])
      const c = crossover(genes, p1, far, rng, (g) => index.has(g), 20, sameGenome)
      if (c === undefined) throw new Error("no child")
      expect(isValid(genes, c)).toBe(true)
      expect(index.has(c)).toBe(false)
    }
  })

  test("p1 = p2 falls back to mutate(p1)", () => {
    const a = Rng.seeded(8)
    const b = Rng.seeded(8)
    const seen = (g: Genome): boolean => sameGenome(g, p1)
    const viaCrossover = crossover(genes, p1, { factors: [...p1.factors] }, a, seen, 20, sameGenome)
    const viaMutate = mutate(genes, p1, b, seen)
    expect(viaCrossover).toEqual(viaMutate as Genome)
  })

  test("after max tries it falls back to mutation (genes from neither parent appear)", () => {
    // Everything made only of p1/p2 genes counts as seen, so every scan fails.
    const mixOnly = (g: Genome): boolean => g.factors.every((x, i) => x === p1.factors[i] || x === p2.factors[i])
    const rng = Rng.seeded(9)
    const c = crossover(genes, p1, p2, rng, mixOnly, 20, sameGenome)
    if (c === undefined) throw new Error("no child")
    expect(c.factors.some((x, i) => x !== p1.factors[i] && x !== p2.factors[i])).toBe(true)
    expect(isValid(genes, c)).toBe(true)
  })
})

describe("dim_piece_mono", () => {
  const d = 16
  const genes: Genes = { space: { kind: "dim_piece_mono", dims: d, step: 0.01, scale: S, sigma: 2 }, startToken: undefined, attentionScale: undefined, p: 0.3, mutation: "gene" }

  test("normalise derives α/β from a YaRN-like ramp and forces the genes", () => {
    const g = normalise(genes, { factors: rampFactors(d, S, 4, 11) }, defaults)
    expect(g.alpha).toBe(4)
    expect(g.beta).toBe(10)
    expect(isValid(genes, g)).toBe(true)
  })

  test("mutants respect 0 ≤ α < β < d/2, the forced genes and monotonicity; the last two genes do mutate", () => {
    const parent = normalise(genes, { factors: rampFactors(d, S, 2, d) }, defaults)
    expect(parent.beta).toBe(d - 1)
    const rng = Rng.seeded(10)
    let lastMoved = 0
    let secondLastMoved = 0
    let breakpointsMoved = 0
    for (let k = 0; k < 300; k++) {
      const c = mutate(genes, parent, rng, (g) => sameGenome(g, parent))
      if (c === undefined) throw new Error("no child")
      const { alpha, beta } = c
      if (alpha === undefined || beta === undefined) throw new Error("no breakpoints")
      expect(Number.isInteger(alpha) && Number.isInteger(beta)).toBe(true)
      expect(alpha).toBeGreaterThanOrEqual(0)
      expect(alpha).toBeLessThan(beta)
      expect(beta).toBeLessThan(d)
      c.factors.forEach((x, i) => {
        if (i <= alpha) expect(x).toBe(1)
        if (i > beta) expect(x).toBe(S)
        expect(x >= 1 && x <= S).toBe(true)
      })
      expect(isMonotone(c.factors)).toBe(true)
      // Moved as free genes (β unchanged), not by being forced to s: the public code never does this.
      if (beta === d - 1 && c.factors[d - 1] !== parent.factors[d - 1]) lastMoved++
      if (beta === d - 1 && c.factors[d - 2] !== parent.factors[d - 2]) secondLastMoved++
      if (alpha !== parent.alpha || beta !== parent.beta) breakpointsMoved++
    }
    expect(lastMoved).toBeGreaterThan(0)
    expect(secondLastMoved).toBeGreaterThan(0)
    expect(breakpointsMoved).toBeGreaterThan(0)
  })

  test("crossover keeps the breakpoints valid", () => {
    const a = normalise(genes, { factors: rampFactors(d, S, 3, 10) }, defaults)
    const b = normalise(genes, { factors: rampFactors(d, S, 6, 14) }, defaults)
    const rng = Rng.seeded(11)
    for (let k = 0; k < 100; k++) {
      const index = new GenomeIndex([a, b])
      const c = crossover(genes, a, b, rng, (g) => index.has(g), 20, sameGenome)
      expect(c !== undefined && isValid(genes, c)).toBe(true)
    }
  })
})

describe("longrope2 space", () => {
  const d = 24
  const cd = 14
  const genes: Genes = {
    space: { kind: "longrope2", dims: d, step: 0.01, criticalDim: cd, sMin: 16, sMax: 32, lastGap: 4 },
    startToken: undefined,
    attentionScale: undefined,
    p: 0.3,
    mutation: "gene",
  }
  const check = (g: Genome): void => {
    const f = g.factors
    const top = f[cd] as number
    for (let i = 0; i < cd; i++) expect(f[i] as number).toBeCloseTo(top ** (i / cd), 12)
    expect(isMonotone(f, true)).toBe(true)
    for (let i = cd; i < d; i++) {
      expect(onGrid(f[i] as number, 0.01)).toBe(true)
      expect(f[i] as number).toBeGreaterThanOrEqual(16)
      expect(f[i] as number).toBeLessThanOrEqual(32)
    }
    expect(f[d - 1] as number).toBeLessThanOrEqual((f[d - 2] as number) + 4 + 1e-9)
  }

  test("normalise repairs any init into the space (flat YaRN tail → strictly increasing)", () => {
    const g = normalise(genes, { factors: rampFactors(d, 16, 4, 12) }, defaults)
    check(g)
    expect(isValid(genes, g)).toBe(true)
    expect(longrope2Ramp(g.factors, cd)).toEqual([...g.factors])
  })

  test("mutation touches only dims ≥ cd, recomputes the ramp, keeps strict monotonicity and the last-dim cap", () => {
    const parent = normalise(genes, { factors: Array.from({ length: d }, (_, i) => 16 + i * 0.5) }, defaults)
    const rng = Rng.seeded(12)
    let rampChanged = 0
    for (let k = 0; k < 300; k++) {
      const c = mutate(genes, parent, rng, (g) => sameGenome(g, parent))
      if (c === undefined) throw new Error("no child")
      check(c)
      if (c.factors[cd] !== parent.factors[cd]) {
        rampChanged++
        expect(c.factors[cd - 1]).not.toBe(parent.factors[cd - 1] as number)
      } else for (let i = 0; i < cd; i++) expect(c.factors[i]).toBe(parent.factors[i] as number)
    }
    expect(rampChanged).toBeGreaterThan(0)
  })

  test("crossover touches only dims ≥ cd and keeps the space", () => {
    const a = normalise(genes, { factors: Array.from({ length: d }, (_, i) => 16 + i * 0.5) }, defaults)
    // b: a's searched genes one step up, so any single swap stays strictly increasing.
    const b = normalise(genes, { factors: a.factors.map((x, i) => (i >= cd ? gridValue(Math.round(x * 100) + 1, 0.01) : x)) }, defaults)
    const rng = Rng.seeded(13)
    let mixes = 0
    for (let k = 0; k < 100; k++) {
      const index = new GenomeIndex([a, b])
      const c = crossover(genes, a, b, rng, (g) => index.has(g), 20, sameGenome)
      if (c === undefined) throw new Error("no child")
      check(c)
      expect(index.has(c)).toBe(false)
      // A true crossover child (not the mutation fallback) takes every searched gene from a or b.
      let fromParents = true
      for (let i = cd; i < d; i++) if (c.factors[i] !== a.factors[i] && c.factors[i] !== b.factors[i]) fromParents = false
      if (fromParents) mixes++
    }
    expect(mixes).toBeGreaterThan(80)
  })
})

describe("extra genes", () => {
  test("attention scale mutates on its grid inside [min, max]; n̂ is never mutated", () => {
    const genes = monoGenes({ attentionScale: { min: 1, max: 1.3, step: 0.01, sigma: 0.05 }, startToken: { values: [0, 4, 8], topParents: 1, mutantTries: 1 } })
    const parent = normalise(genes, onGridParent, { startToken: 4, attentionScale: 1.1 })
    expect(parent.startToken).toBe(4)
    const rng = Rng.seeded(14)
    let moved = 0
    for (let k = 0; k < 200; k++) {
      const c = mutate(genes, parent, rng, (g) => sameGenome(g, parent))
      if (c === undefined || c.attentionScale === undefined) throw new Error("no child")
      expect(c.startToken).toBe(4)
      expect(c.attentionScale >= 1 && c.attentionScale <= 1.3).toBe(true)
      expect(onGrid(c.attentionScale, 0.01)).toBe(true)
      if (c.attentionScale !== 1.1) moved++
    }
    expect(moved).toBeGreaterThan(20)
  })
})
