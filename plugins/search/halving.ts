/**
 * `successive-halving`: a budget-aware evolutionary search over fidelities.
 *
 * Same genome, operators and duplicate rejection as `evolutionary`, but a small elite of full-fidelity
 * individuals breeds a cohort of `offspring` children per generation, and the cohort climbs the
 * fidelity ladder (the context's cheaper `fidelities`, cheapest first, then the full one): at each rung
 * all survivors are evaluated and only the best 1/eta go on. So most children cost a short / few-sample
 * evaluation, and each generation spends about offspring/eta^R full-length evaluations instead of
 * `mutants + crossovers`. The run stops at `maxFullEvaluations` full-length evaluations, at
 * `maxGenerations`, or when the best full-fidelity fitness reaches `targetFitness`. Generation 0 scores
 * the init vectors at full fidelity only; generation 1 is `initMutants` mutants of them.
 *
 * With n̂ searched, every mutant also enters the cohort with `mutantTries` random n̂ values and the top
 * `topParents` elites with every value not yet tried: the cheap rungs sort them out.
 */
import { GenomeIndex } from "./grid.ts"
import { Schema } from "effect"
import { buildGenes, decodeStrategyParams, defaultSpaceParams, int, num, SpaceParamsFields, type SpaceParams, sRange } from "./params.ts"
import { Rng, type RngState } from "../../common/rng.ts"
import { mutate, type Genes } from "./space.ts"
import { answer, crossoverOfTwo, rank, sampleValues, startingPoint, type Member } from "./evolutionary.ts"
import { type Candidate, type Evaluated, type Fidelity, type Genome, type Progress, type Result, type SearchContext, type Strategy } from "./types.ts"
import { inputError } from "../../common/errors.ts"

export interface HalvingParams extends SpaceParams {
  /** Full-fidelity individuals kept as parents. */
  readonly elites: number
  /** Children bred per generation (before n̂ variants). */
  readonly offspring: number
  /** Share of the children made by mutation; the rest by crossover. */
  readonly mutantShare: number
  /**
   * Children of generation 1: mutants of the init vectors, which generation 0 scored at full fidelity.
   * Later generations breed `offspring`.
   */
  readonly initMutants: number
  /** Keep the best 1/eta at each rung. */
  readonly eta: number
  readonly maxCrossoverTry: number
  /** Stop after this many full-fidelity evaluations (the target: a quarter of 1344). */
  readonly maxFullEvaluations: number
  readonly maxGenerations: number
  /** Stop as soon as the best full-fidelity fitness is ≤ this; null: never. */
  readonly targetFitness: number | null
  readonly seed: number
}

export const defaultHalvingParams = (ctx: SearchContext): HalvingParams => ({
  ...defaultSpaceParams,
  elites: 8,
  offspring: 32,
  mutantShare: 0.5,
  initMutants: 64,
  eta: 4,
  maxCrossoverTry: 20,
  maxFullEvaluations: 336,
  maxGenerations: 1000,
  targetFitness: null,
  seed: ctx.seed,
})

/** One evaluation at one rung. */
export interface Trial {
  readonly id: number
  readonly genome: Genome
  readonly rung: number
  readonly fitness: number
}

export interface HalvingState {
  readonly strategy: "successive-halving"
  readonly params: HalvingParams
  readonly genes: Genes
  /** Rungs, cheapest first; the last is the full fidelity. */
  readonly rungs: readonly Fidelity[]
  readonly init: readonly Genome[]
  readonly rng: RngState
  readonly generation: number
  /** The rung the current cohort is at (meaningful while the cohort is non-empty). */
  readonly rung: number
  /** Genomes still climbing in the current generation. */
  readonly cohort: readonly Genome[]
  /** The batch out for evaluation: the cohort at `rung`. */
  readonly pending: readonly { id: number; genome: Genome }[]
  readonly elites: readonly Member[]
  readonly trials: readonly Trial[]
  readonly fullEvaluations: number
  readonly nextId: number
}

/** Every key optional: the workflow's `strategyParams` for this strategy, checked at load with positions. */
export const HalvingParamsSchema = Schema.Struct({
  ...SpaceParamsFields,
  elites: Schema.optionalKey(int(1)),
  offspring: Schema.optionalKey(int(1)),
  mutantShare: Schema.optionalKey(num("expected a share in [0, 1]", (x) => x >= 0 && x <= 1)),
  initMutants: Schema.optionalKey(int(0)),
  eta: Schema.optionalKey(num("expected > 1", (x) => x > 1)),
  maxCrossoverTry: Schema.optionalKey(int(0)),
  maxFullEvaluations: Schema.optionalKey(int(1)),
  maxGenerations: Schema.optionalKey(int(1)),
  targetFitness: Schema.optionalKey(Schema.NullOr(Schema.Finite)),
  seed: Schema.optionalKey(int(0)),
}).check(sRange)

export function resolveHalvingParams(ctx: SearchContext, params: Partial<HalvingParams>): HalvingParams {
  const p: HalvingParams = { ...defaultHalvingParams(ctx), ...decodeStrategyParams(HalvingParamsSchema, "successive-halving", params) }
  buildGenes("successive-halving", ctx, p)
  return p
}

export function initHalving(ctx: SearchContext, params: Partial<HalvingParams>): HalvingState {
  const p = resolveHalvingParams(ctx, params)
  const { genes, init, rng } = startingPoint("successive-halving", ctx, p)
  return {
    strategy: "successive-halving",
    params: p,
    genes,
    rungs: [...(ctx.fidelities ?? []), ctx.fidelity],
    init,
    rng,
    generation: 0,
    rung: 0,
    cohort: [],
    pending: [],
    elites: [],
    trials: [],
    fullEvaluations: 0,
    nextId: 0,
  }
}

function bestFull(s: HalvingState): Member | undefined {
  return rank(s.trials.filter((t) => t.rung === s.rungs.length - 1))[0]
}

export function halvingDone(s: HalvingState): boolean {
  if (s.pending.length > 0 || s.cohort.length > 0) return false
  const p = s.params
  if (s.fullEvaluations >= p.maxFullEvaluations || s.generation >= p.maxGenerations) return true
  const best = bestFull(s)
  return p.targetFitness !== null && best !== undefined && best.fitness <= p.targetFitness
}

/** A new generation's children, all unseen. */
function breed(s: HalvingState, rng: Rng): Genome[] {
  const { params: p, genes } = s
  const seen = new GenomeIndex(s.trials.map((t) => t.genome))
  const isSeen = (g: Genome): boolean => seen.has(g)
  const out: Genome[] = []
  const add = (g: Genome): void => {
    out.push(g)
    seen.add(g)
  }
  const st = genes.startToken
  const withVariants = (child: Genome): void => {
    add(child)
    if (st === undefined) return
    for (const v of sampleValues(rng, st.values, st.mutantTries, child.startToken)) {
      const g: Genome = { ...child, startToken: v }
      if (!isSeen(g)) add(g)
    }
  }
  if (s.generation === 0) {
    for (const g of s.init) if (!isSeen(g)) add(g)
    return out
  }
  const parents = rank(s.elites)
  if (s.generation === 1 && p.initMutants > 0) {
    // The init vectors are the elites now: their mutants, round-robin from the best.
    for (let k = 0; k < p.initMutants; k++) {
      const child = mutate(genes, (parents[k % parents.length] as Member).genome, rng, isSeen)
      if (child !== undefined) withVariants(child)
    }
    return out
  }
  if (st !== undefined) {
    for (const parent of parents.slice(0, st.topParents)) {
      for (const v of st.values) {
        const g: Genome = { ...parent.genome, startToken: v }
        if (!isSeen(g)) add(g)
      }
    }
  }
  const mutants = Math.round(p.offspring * p.mutantShare)
  for (let k = 0; k < p.offspring; k++) {
    if (k < mutants || parents.length < 2) {
      const child = mutate(genes, rng.pick(parents).genome, rng, isSeen)
      if (child !== undefined) withVariants(child)
    } else {
      const child = crossoverOfTwo(genes, parents, rng, isSeen, p.maxCrossoverTry)
      if (child !== undefined) add(child)
    }
  }
  return out
}

export function proposeHalving(state: HalvingState): { state: HalvingState; candidates: Candidate[] } {
  const toCandidates = (s: HalvingState): Candidate[] => {
    const fidelity = s.rungs[s.rung] as Fidelity
    return s.pending.map((c) => ({ id: c.id, genome: c.genome, fidelity }))
  }
  if (state.pending.length > 0 || halvingDone(state)) return { state, candidates: toCandidates(state) }
  let s = state
  if (s.cohort.length === 0) {
    const rng = Rng.fromState(s.rng)
    const cohort = breed(s, rng)
    // Generation 0 is the init vectors (PI, NTK, YaRN…): few, and the anchors of the search, so they go
    // straight to full fidelity. Short-length rungs can rank them badly: factors made for scale s,
    // scored on a prefix at L/4, measured on the tiny model, dropped HF YaRN at the first rung.
    s = { ...s, rng: rng.state(), cohort, rung: s.generation === 0 ? s.rungs.length - 1 : 0 }
  }
  // The last rung never spends past the full-evaluation budget.
  let cohort = s.cohort
  if (s.rung === s.rungs.length - 1) cohort = cohort.slice(0, Math.max(0, s.params.maxFullEvaluations - s.fullEvaluations))
  let nextId = s.nextId
  const pending = cohort.map((genome) => ({ id: nextId++, genome }))
  const next: HalvingState = { ...s, cohort, pending, nextId }
  return { state: next, candidates: toCandidates(next) }
}

export function observeHalving(state: HalvingState, results: readonly Result[]): HalvingState {
  if (state.pending.length === 0) {
    if (results.length > 0) throw new Error("observe: no batch is pending")
    // An empty batch (nothing new to breed) still ends the generation.
    return { ...state, cohort: [], generation: state.generation + 1 }
  }
  const fit = answer(state.pending, results)
  const trials: Trial[] = state.pending.map((c) => ({ id: c.id, genome: c.genome, rung: state.rung, fitness: fit.get(c.id) as number }))
  const all = [...state.trials, ...trials]
  const last = state.rungs.length - 1
  if (state.rung < last) {
    const keep = Math.max(1, Math.ceil(trials.length / state.params.eta))
    const cohort = rank(trials).slice(0, keep).map((t) => t.genome)
    return { ...state, trials: all, pending: [], cohort, rung: state.rung + 1 }
  }
  const elites = rank([...state.elites, ...trials]).slice(0, state.params.elites)
  return {
    ...state,
    trials: all,
    pending: [],
    cohort: [],
    rung: 0,
    elites,
    fullEvaluations: state.fullEvaluations + trials.length,
    generation: state.generation + 1,
  }
}

export function bestHalving(state: HalvingState): Evaluated | undefined {
  const m = bestFull(state)
  return m === undefined ? undefined : { id: m.id, genome: m.genome, fitness: m.fitness, fidelity: state.rungs[state.rungs.length - 1] as Fidelity }
}

/** Cost of all evaluations in full-evaluation units, taking cost ∝ samples × length. */
export function halvingCost(state: HalvingState): number {
  const full = state.rungs[state.rungs.length - 1] as Fidelity
  return state.trials.reduce((c, t) => {
    const f = state.rungs[t.rung] as Fidelity
    return c + (f.samples * f.length) / (full.samples * full.length)
  }, 0)
}

export function progressHalving(state: HalvingState): Progress {
  const full = state.rungs[state.rungs.length - 1] as Fidelity
  return {
    generation: state.generation,
    generations: undefined,
    evaluations: state.trials.length,
    fullEvaluations: state.fullEvaluations,
    population: rank(state.elites).map((m) => ({ ...m, fidelity: full })),
    best: bestHalving(state),
  }
}

export const successiveHalving: Strategy<HalvingParams, HalvingState> = {
  name: "successive-halving",
  resolveParams: resolveHalvingParams,
  params: HalvingParamsSchema,
  init: initHalving,
  propose: proposeHalving,
  observe: observeHalving,
  done: halvingDone,
  best: bestHalving,
  progress: progressHalving,
}
