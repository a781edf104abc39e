/** `linear` (position interpolation): every θ_i divided by `factor` (HF _compute_linear_scaling_rope_parameters). */
import { piFactors } from "./factors.ts"
import { Params } from "./params.ts"
import { chosen, divide, fmt } from "./table.ts"
import type { RopeMethod } from "./types.ts"

export const linearMethod: RopeMethod = {
  name: "linear",
  resolve: (spec) => {
    const factor = new Params(spec).requireNum("factor", { positive: true })
    const table = chosen(spec, {
      method: "linear",
      reason: `position interpolation: every dim divided by factor ${fmt(factor)}`,
      invFreq: divide(spec, piFactors(spec, factor)),
    })
    return () => table
  },
}
