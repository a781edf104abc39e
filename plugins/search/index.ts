/**
 * Search strategies. Built-in ones register here through the same API a user's plugin uses; the
 * `search` stage looks a strategy up by name and drives it (types.ts has the loop and the contract).
 *
 * Built in:
 * - `evolutionary` (evolutionary.ts): LongRoPE's search, spaces dim_mono / dim_piece_mono / longrope2
 *   (space.ts), optional n̂ and m genes; the paper's defaults (params.ts).
 * - `longrope2`: `evolutionary` with space "longrope2" (needs `criticalDim`).
 * - `successive-halving` (halving.ts): the budget-aware one; needs the context's cheaper `fidelities`.
 *
 * A user's strategy implements Strategy<Params, State> with a JSON-only State (RNG state included:
 * common/rng.ts) and calls registerStrategy. Logs and LongRoPE file formats: log.ts. A synthetic landscape for
 * testing strategies without a model: synthetic.ts. Fitness functions (ppl-truncate, needle-ppl, the
 * short-context penalty) and how a genome becomes a RoPE table: fitness.ts; the on-disk candidate cache:
 * cache.ts. The `search` stage that drives all of it: stages/search.ts.
 */
import { evolutionary, type EvolutionaryParams, type EvolutionaryState } from "./evolutionary.ts"
import { successiveHalving } from "./halving.ts"
import type { Strategy } from "./types.ts"

export type * from "./types.ts"
export { WORST, sanitizeFitness, sameFidelity } from "./types.ts"
export { evolutionary, type EvolutionaryParams, type EvolutionaryState } from "./evolutionary.ts"
export { successiveHalving, halvingCost, type HalvingParams, type HalvingState } from "./halving.ts"
export { PAPER_START_TOKENS, longrope2Ramp, type Genes, type SpaceConfig } from "./space.ts"
export * from "./log.ts"
export { fullEvaluationsToTarget } from "./measure.ts"
export * from "./fitness.ts"
export { CandidateCache, candidateKey, type CacheEntry, type CacheKeyParts } from "./cache.ts"

// Params and State differ per strategy; the stage only passes them through (params from the workflow
// file, State through JSON), so the registry erases them.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyStrategy = Strategy<any, any>

const registry = new Map<string, AnyStrategy>()

export function registerStrategy(strategy: AnyStrategy, aliases: readonly string[] = []): void {
  for (const name of [strategy.name, ...aliases]) registry.set(name, strategy)
}

export function getStrategy(name: string): AnyStrategy {
  const s = registry.get(name)
  if (s === undefined) throw new Error(`unknown search strategy "${name}"; known: ${strategyNames().join(", ")}`)
  return s
}

export const strategyNames = (): string[] => [...registry.keys()].sort()

/** LongRoPE2's search: the evolutionary strategy on the critical-dimension space. */
export const longrope2: Strategy<EvolutionaryParams, EvolutionaryState> = {
  ...evolutionary,
  name: "longrope2",
  resolveParams: (ctx, params) => evolutionary.resolveParams(ctx, { space: "longrope2", ...params }),
  init: (ctx, params) => evolutionary.init(ctx, { space: "longrope2", ...params }),
}

registerStrategy(evolutionary)
registerStrategy(longrope2)
registerStrategy(successiveHalving)
