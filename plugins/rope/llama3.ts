/**
 * `llama3`: Llama 3.1 smooth interpolation (HF _compute_llama3_parameters): factor, low_freq_factor,
 * high_freq_factor and original_max_position_embeddings (top level wins, as in transformers) are required.
 * No attention scale. The same table serves every length.
 */
import { llama3Factors } from "./factors.ts"
import { Params } from "./params.ts"
import { chosen, divide, fmt } from "./table.ts"
import type { RopeMethod } from "./types.ts"

export const llama3Method: RopeMethod = {
  name: "llama3",
  resolve: (spec) => {
    const p: Params = new Params(spec)
    const factor = p.requireNum("factor", { positive: true })
    const lowFreqFactor = p.requireNum("low_freq_factor", { positive: true })
    const highFreqFactor = p.requireNum("high_freq_factor", { positive: true })
    if (!(highFreqFactor > lowFreqFactor)) p.fail("high_freq_factor", `a number > low_freq_factor (${lowFreqFactor})`, highFreqFactor)
    const originalLength = p.originalMax(true)!
    const g = { rotaryDim: spec.rotaryDim, base: spec.base, originalLength }
    const table = chosen(spec, {
      method: "llama3",
      reason:
        `llama3: wavelengths < ${fmt(originalLength / highFreqFactor)} kept, > ${fmt(originalLength / lowFreqFactor)} ` +
        `divided by ${fmt(factor)}, smooth in between`,
      invFreq: divide(spec, llama3Factors(g, { factor, lowFreqFactor, highFreqFactor })),
    })
    return () => table
  },
}
