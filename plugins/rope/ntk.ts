/**
 * `ntk`: static NTK-aware scaling, base' = base · factor^(d/(d−2)), the same at every length
 * (vLLM's NTKScalingRotaryEmbedding; transformers has only the dynamic form).
 */
import { defaultInvFreq } from "../../kernels/rope-table.ts"
import { ntkBase } from "./factors.ts"
import { Params } from "./params.ts"
import { chosen, fmt } from "./table.ts"
import type { RopeMethod } from "./types.ts"

export const ntkMethod: RopeMethod = {
  name: "ntk",
  resolve: (spec) => {
    const factor = new Params(spec).requireNum("factor", { positive: true })
    const base = ntkBase(spec.base, spec.rotaryDim, factor)
    const table = chosen(spec, {
      method: "ntk",
      reason: `static NTK: base ${fmt(spec.base)} → ${fmt(base)} (factor ${fmt(factor)})`,
      invFreq: defaultInvFreq(base, spec.rotaryDim),
    })
    return () => table
  },
}
