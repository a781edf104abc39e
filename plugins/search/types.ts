/**
 * The search-strategy plugin interface.
 *
 * A strategy proposes candidates and learns their fitness; the caller (the `search` stage) owns
 * evaluation, caching, logging and resume. A run is a pure function of (context, params, fitness
 * answers): every bit of randomness comes from the RNG state stored inside the strategy's State, and
 * State is plain JSON, so the stage can checkpoint after every `observe` and a resumed run is identical.
 *
 * The loop the stage runs:
 *   let s = strategy.init(ctx, params)
 *   while (!strategy.done(s)) {
 *     const { state, candidates } = strategy.propose(s)   // idempotent until observed
 *     const results = await evaluate(candidates)           // cache, GPU, workers: the stage's business
 *     s = strategy.observe(state, results)                 // checkpoint s here (JSON.stringify)
 *   }
 *   strategy.best(s)
 *
 * `progress(s).generation` goes up when a generation is complete (a multi-fidelity strategy needs
 * several batches per generation): that is when the stage appends to the search log (log.ts). The
 * stage's evaluation cache must key on (genome, fidelity): a multi-fidelity strategy evaluates one
 * genome at several fidelities, and never proposes the same (genome, fidelity) twice.
 *
 * Fitness is minimised (perplexity). A non-finite fitness (failed evaluation) is stored as WORST,
 * because JSON has no Infinity.
 */
import type { Schema } from "effect"
import type { ParamIssue } from "../../pipeline/workflow/stage.ts"
import type { RngState } from "../../common/rng.ts"

/** How a candidate is to be evaluated: samples × tokens. The full fidelity is the context's. */
export interface Fidelity {
  readonly samples: number
  readonly length: number
}

/** One point of the search space. Optional genes are absent when the space does not search them. */
export interface Genome {
  /** λ_i, one per rotary frequency pair (d_r/2 values); θ'_i = θ_i / λ_i. */
  readonly factors: readonly number[]
  /** n̂: positions below it keep the original rotation. */
  readonly startToken?: number
  /** m: multiplies cos and sin (logits scale by m²). */
  readonly attentionScale?: number
  /** dim_piece_mono breakpoints: genes at dim ≤ alpha are 1, genes at dim > beta are s. */
  readonly alpha?: number
  readonly beta?: number
}

export interface Candidate {
  /** Unique within a run; results are matched by it. */
  readonly id: number
  readonly genome: Genome
  readonly fidelity: Fidelity
}

export interface Result {
  readonly id: number
  readonly fitness: number
}

export interface Evaluated {
  readonly id: number
  readonly genome: Genome
  readonly fidelity: Fidelity
  readonly fitness: number
}

/** What the stage knows about the problem; everything a strategy needs besides its own params. */
export interface SearchContext {
  /** Number of factors, d_r/2. */
  readonly dims: number
  /** s = L′/L0 (target over original length). */
  readonly scale: number
  /** The full (target) fidelity: the one whose fitness counts. */
  readonly fidelity: Fidelity
  /**
   * Cheaper fidelities for multi-fidelity strategies, cheapest first, all cheaper than `fidelity`
   * (e.g. shorter length or fewer samples). Strategies that do not use them ignore them.
   */
  readonly fidelities?: readonly Fidelity[]
  /** Initial factor vectors, e.g. PI, NTK and YaRN at this scale (computed by the rope plugins). */
  readonly init: readonly Genome[]
  readonly seed: number
}

/** A summary for logs and progress: the stage adds wall/GPU time. */
export interface Progress {
  /** Completed generations. */
  readonly generation: number
  /** Planned generations (for ETA), if the strategy knows. */
  readonly generations: number | undefined
  readonly evaluations: number
  /** Evaluations at the context's full fidelity. */
  readonly fullEvaluations: number
  /** The current population (evaluated at full fidelity), best first. */
  readonly population: readonly Evaluated[]
  readonly best: Evaluated | undefined
}

export interface Proposal<S> {
  readonly state: S
  readonly candidates: readonly Candidate[]
}

export interface Strategy<P, S> {
  readonly name: string
  /** Fills defaults and validates (throws an error naming the field). */
  readonly resolveParams: (ctx: SearchContext, params: Partial<P>) => P
  /**
   * The params as an Effect Schema, every key optional (the built-ins: evolutionary.ts, halving.ts): the
   * search stage checks a workflow's `strategyParams` against it at load, with positions, before the model
   * is read. Checks that need the model (dims, scale) stay in `resolveParams`.
   */
  readonly params?: Schema.Codec<any, any, never, never>
  /** For a strategy without `params`: checks params without a context (unknown keys, values wrong whatever the model). */
  readonly validateParams?: (params: Readonly<Record<string, unknown>>) => readonly ParamIssue[]
  readonly init: (ctx: SearchContext, params: Partial<P>) => S
  /** The next batch to evaluate. Calling it again before `observe` returns the same batch. */
  readonly propose: (state: S) => Proposal<S>
  /** Takes the fitness of every candidate of the pending batch (any order); throws if one is missing. */
  readonly observe: (state: S, results: readonly Result[]) => S
  readonly done: (state: S) => boolean
  /** The best individual evaluated at full fidelity so far. */
  readonly best: (state: S) => Evaluated | undefined
  readonly progress: (state: S) => Progress
}

/** The worst fitness, JSON-safe (stands in for Infinity/NaN). */
export const WORST = Number.MAX_VALUE

export const sanitizeFitness = (f: number): number => (Number.isFinite(f) ? f : WORST)

export const sameFidelity = (a: Fidelity, b: Fidelity): boolean => a.samples === b.samples && a.length === b.length

export type { ParamIssue, RngState }
