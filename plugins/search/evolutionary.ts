/**
 * `evolutionary`: LongRoPE's elitist search (method notes §2.3–2.4), with the start-token gene n̂
 * (try-start-token) and the attention-scale gene m as options.
 *
 * Generation 0 evaluates the init vectors (PI, NTK, YaRN… as given) plus mutants of them, round-robin,
 * up to `populationSize`. Every later generation: parents = the best `parents` of the population;
 * `mutants` mutants of uniformly chosen parents; `crossovers` crossovers of two distinct parents (the
 * better one is p1); population ← parents + children. Duplicates are rejected against every genome
 * ever proposed. With n̂ searched, the top `startToken.topParents` parents are tried with every value
 * of the set not yet evaluated and every new mutant with `mutantTries` random values; a variant replaces
 * its original when it is better ("keep the better").
 */
import { GenomeIndex, sameGenome } from "./grid.ts"
import { Schema } from "effect"
import { buildGenes, decodeStrategyParams, defaultSpaceParams, int, SpaceParamsFields, type SpaceParams, sRange } from "./params.ts"
import { Rng, type RngState } from "../../common/rng.ts"
import { crossover, mutate, normalise, type Genes } from "./space.ts"
import { sanitizeFitness, type Candidate, type Evaluated, type Fidelity, type Genome, type Progress, type Result, type SearchContext, type Strategy } from "./types.ts"

export interface EvolutionaryParams extends SpaceParams {
  readonly populationSize: number
  /** Child generations after the initial population (LongRoPE's max_time_budget). */
  readonly iterations: number
  readonly parents: number
  readonly mutants: number
  readonly crossovers: number
  readonly maxCrossoverTry: number
  /** Defaults to the context's seed. */
  readonly seed: number
}

export const defaultEvolutionaryParams = (ctx: SearchContext): EvolutionaryParams => ({
  ...defaultSpaceParams,
  populationSize: 64,
  iterations: 40,
  parents: 32,
  mutants: 16,
  crossovers: 16,
  maxCrossoverTry: 20,
  seed: ctx.seed,
})

/** An evaluated individual. */
export interface Member {
  readonly id: number
  readonly genome: Genome
  readonly fitness: number
}

/** A proposed candidate; `group` is the id of the individual it is a start-token variant of (or its own id). */
export interface Pending {
  readonly id: number
  readonly genome: Genome
  readonly group: number
}

export interface EvolutionaryState {
  readonly strategy: "evolutionary"
  readonly params: EvolutionaryParams
  readonly genes: Genes
  readonly fidelity: Fidelity
  readonly init: readonly Genome[]
  readonly rng: RngState
  /** Evaluated batches: 0 before the initial population, 1 + k after k child generations. */
  readonly generation: number
  readonly population: readonly Member[]
  readonly history: readonly Member[]
  readonly pending: readonly Pending[]
  readonly nextId: number
}

/** Best first; ties by id so the order is a pure function of the state. */
export const rank = <M extends { id: number; fitness: number }>(ms: readonly M[]): M[] =>
  [...ms].sort((a, b) => a.fitness - b.fitness || a.id - b.id)

/** Every key optional: the workflow's `strategyParams` for this strategy, checked at load with positions. */
export const EvolutionaryParamsSchema = Schema.Struct({
  ...SpaceParamsFields,
  populationSize: Schema.optionalKey(int(1)),
  iterations: Schema.optionalKey(int(0)),
  parents: Schema.optionalKey(int(1)),
  mutants: Schema.optionalKey(int(0)),
  crossovers: Schema.optionalKey(int(0)),
  maxCrossoverTry: Schema.optionalKey(int(0)),
  seed: Schema.optionalKey(int(0)),
}).check(sRange)

export function resolveEvolutionaryParams(ctx: SearchContext, params: Partial<EvolutionaryParams>): EvolutionaryParams {
  const p: EvolutionaryParams = { ...defaultEvolutionaryParams(ctx), ...decodeStrategyParams(EvolutionaryParamsSchema, "evolutionary", params) }
  buildGenes("evolutionary", ctx, p)
  return p
}

/** What a strategy `name` starts from: its genes, the context's init vectors normalised onto them, the seeded generator. */
export function startingPoint(name: string, ctx: SearchContext, p: SpaceParams & { readonly seed: number }): { genes: Genes; init: Genome[]; rng: RngState } {
  const genes = buildGenes(name, ctx, p)
  if (ctx.init.length === 0) throw new Error(`${name}: the context needs at least one init vector`)
  const defaults = { startToken: p.initStartToken, attentionScale: p.initAttentionScale }
  return { genes, init: ctx.init.map((g) => normalise(genes, g, defaults)), rng: Rng.seeded(p.seed).state() }
}

export function initEvolutionary(ctx: SearchContext, params: Partial<EvolutionaryParams>): EvolutionaryState {
  const p = resolveEvolutionaryParams(ctx, params)
  const { genes, init, rng } = startingPoint("evolutionary", ctx, p)
  return {
    strategy: "evolutionary",
    params: p,
    genes,
    fidelity: ctx.fidelity,
    init,
    rng,
    generation: 0,
    population: [],
    history: [],
    pending: [],
    nextId: 0,
  }
}

export const evolutionaryDone = (s: EvolutionaryState): boolean => s.pending.length === 0 && s.generation > s.params.iterations

/** Random distinct values of the set other than `except`, drawn without replacement. */
export function sampleValues(rng: Rng, values: readonly number[], k: number, except: number | undefined): number[] {
  const pool = values.filter((v) => v !== except)
  const out: number[] = []
  while (out.length < k && pool.length > 0) out.push(pool.splice(rng.int(0, pool.length - 1), 1)[0] as number)
  return out
}

/** Crossover of two distinct parents drawn uniformly from `parents` (ranked, at least two): the better one is p1. */
export function crossoverOfTwo(
  genes: Genes,
  parents: readonly Member[],
  rng: Rng,
  isSeen: (g: Genome) => boolean,
  maxTry: number,
): Genome | undefined {
  const i = rng.int(0, parents.length - 1)
  let j = rng.int(0, parents.length - 2)
  if (j >= i) j++
  // parents are ranked, so the lower index is the better parent (p1).
  const p1 = parents[Math.min(i, j)] as Member
  const p2 = parents[Math.max(i, j)] as Member
  return crossover(genes, p1.genome, p2.genome, rng, isSeen, maxTry, sameGenome)
}

export function proposeEvolutionary(state: EvolutionaryState): { state: EvolutionaryState; candidates: Candidate[] } {
  const toCandidates = (s: EvolutionaryState): Candidate[] => s.pending.map((c) => ({ id: c.id, genome: c.genome, fidelity: s.fidelity }))
  if (state.pending.length > 0 || evolutionaryDone(state)) return { state, candidates: toCandidates(state) }
  const { params: p, genes } = state
  const rng = Rng.fromState(state.rng)
  const seen = new GenomeIndex(state.history.map((m) => m.genome))
  const pending: Pending[] = []
  let nextId = state.nextId
  const add = (genome: Genome, group?: number): number => {
    const id = nextId++
    pending.push({ id, genome, group: group ?? id })
    seen.add(genome)
    return id
  }
  const isSeen = (g: Genome): boolean => seen.has(g)

  if (state.generation === 0) {
    for (const g of state.init) if (!isSeen(g)) add(g)
    for (let k = 0; pending.length < p.populationSize && k < 50 * p.populationSize; k++) {
      const child = mutate(genes, state.init[k % state.init.length] as Genome, rng, isSeen)
      if (child !== undefined) add(child)
    }
  } else {
    const parents = rank(state.population).slice(0, p.parents)
    const st = genes.startToken
    if (st !== undefined) {
      for (const parent of parents.slice(0, st.topParents)) {
        for (const v of st.values) {
          const g: Genome = { ...parent.genome, startToken: v }
          if (!isSeen(g)) add(g, parent.id)
        }
      }
    }
    for (let k = 0; k < p.mutants && parents.length > 0; k++) {
      const child = mutate(genes, rng.pick(parents).genome, rng, isSeen)
      if (child === undefined) continue
      const id = add(child)
      if (st !== undefined) {
        for (const v of sampleValues(rng, st.values, st.mutantTries, child.startToken)) {
          const g: Genome = { ...child, startToken: v }
          if (!isSeen(g)) add(g, id)
        }
      }
    }
    for (let k = 0; k < p.crossovers && parents.length > 0; k++) {
      let child: Genome | undefined
      if (parents.length < 2) child = mutate(genes, (parents[0] as Member).genome, rng, isSeen)
      else child = crossoverOfTwo(genes, parents, rng, isSeen, p.maxCrossoverTry)
      if (child !== undefined) add(child)
    }
  }
  const next: EvolutionaryState = { ...state, rng: rng.state(), pending, nextId }
  return { state: next, candidates: toCandidates(next) }
}

/** Matches results to the pending batch; every pending id must be answered exactly once. */
export function answer(pending: readonly { id: number }[], results: readonly Result[]): Map<number, number> {
  const want = new Set(pending.map((c) => c.id))
  const got = new Map<number, number>()
  for (const r of results) {
    if (!want.has(r.id)) throw new Error(`observe: result for unknown candidate ${r.id}`)
    if (got.has(r.id)) throw new Error(`observe: two results for candidate ${r.id}`)
    got.set(r.id, sanitizeFitness(r.fitness))
  }
  for (const id of want) if (!got.has(id)) throw new Error(`observe: no result for candidate ${id}`)
  return got
}

export function observeEvolutionary(state: EvolutionaryState, results: readonly Result[]): EvolutionaryState {
  if (state.pending.length === 0 && evolutionaryDone(state)) return state
  const fit = answer(state.pending, results)
  const evaluated: Member[] = state.pending.map((c) => ({ id: c.id, genome: c.genome, fitness: fit.get(c.id) as number }))
  const history = [...state.history, ...evaluated]
  let population: Member[]
  if (state.generation === 0) population = evaluated
  else {
    population = rank(state.population).slice(0, state.params.parents)
    // Group start-token variants with their original; the best of each group stays.
    const groups = new Map<number, Member[]>()
    for (let k = 0; k < evaluated.length; k++) {
      const m = evaluated[k] as Member
      const group = (state.pending[k] as Pending).group
      const list = groups.get(group) ?? []
      list.push(m)
      groups.set(group, list)
    }
    for (const [group, members] of groups) {
      const at = population.findIndex((m) => m.id === group)
      if (at >= 0) {
        const best = rank([population[at] as Member, ...members])[0] as Member
        population[at] = best
      } else population.push(rank(members)[0] as Member)
    }
  }
  return { ...state, history, population, pending: [], generation: state.generation + 1 }
}

export function bestEvolutionary(state: EvolutionaryState): Evaluated | undefined {
  const m = rank(state.history)[0]
  return m === undefined ? undefined : { ...m, fidelity: state.fidelity }
}

export function progressEvolutionary(state: EvolutionaryState): Progress {
  const best = bestEvolutionary(state)
  return {
    generation: state.generation,
    generations: state.params.iterations + 1,
    evaluations: state.history.length,
    fullEvaluations: state.history.length,
    population: rank(state.population).map((m) => ({ ...m, fidelity: state.fidelity })),
    best,
  }
}

export const evolutionary: Strategy<EvolutionaryParams, EvolutionaryState> = {
  name: "evolutionary",
  resolveParams: resolveEvolutionaryParams,
  params: EvolutionaryParamsSchema,
  init: initEvolutionary,
  propose: proposeEvolutionary,
  observe: observeEvolutionary,
  done: evolutionaryDone,
  best: bestEvolutionary,
  progress: progressEvolutionary,
}
