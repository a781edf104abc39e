/**
 * Evaluations-to-target: how many full-fidelity evaluations a finished (or stopped) run had spent when
 * its best full-fidelity fitness first reached a target (e.g. the evolutionary search's final best).
 * The number the issue asks to compare between strategies on the same model, length and samples.
 */
import type { EvolutionaryState } from "./evolutionary.ts"
import type { HalvingState } from "./halving.ts"

/** 1-based count of full evaluations up to the first hit, or undefined when the run never got there. */
export function fullEvaluationsToTarget(state: EvolutionaryState | HalvingState, target: number): number | undefined {
  const full =
    state.strategy === "evolutionary" ? state.history : state.trials.filter((t) => t.rung === state.rungs.length - 1)
  const i = full.findIndex((m) => m.fitness <= target)
  return i < 0 ? undefined : i + 1
}
