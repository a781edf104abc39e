// Shared by the strategy tests: the usual init vectors and a driver that scores on a synthetic landscape.
import { rampFactors, type Landscape } from "../../plugins/search/synthetic.ts"
import type { Genome, SearchContext, Strategy } from "../../plugins/search/types.ts"

/** The init vectors a search starts from: YaRN-like (ramp between `low` and `high`), PI, NTK-like. */
export const initVectors = (dims: number, scale: number, low: number, high: number): Genome[] => [
  { factors: rampFactors(dims, scale, low, high) }, // YaRN-like
  { factors: Array.from({ length: dims }, () => scale) }, // PI
  { factors: Array.from({ length: dims }, (_, i) => scale ** (i / (dims - 1))) }, // NTK-like
]

export const roundTrip = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T

/**
 * A driver that runs a strategy like the stage does, each candidate scored by `land`; `each` may replace
 * the state after step k (e.g. round-trip it through JSON, as an interrupted run does).
 */
export const driveOn =
  (land: Landscape) =>
  <P, St>(st: Strategy<P, St>, c: SearchContext, params: Partial<P>, each?: (s: St, step: number) => St): St => {
    let s = st.init(c, params)
    for (let step = 0; !st.done(s); step++) {
      const { state, candidates } = st.propose(s)
      s = st.observe(state, candidates.map((x) => ({ id: x.id, fitness: land.fitness(x.genome, x.fidelity) })))
      if (each) s = each(s, step)
    }
    return s
  }
