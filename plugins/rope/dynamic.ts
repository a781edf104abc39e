/**
 * `dynamic`: HF dynamic NTK (_compute_dynamic_ntk_parameters). For an input of `length` tokens HF's
 * seq_len is max(position_ids)+1 = length, floored at max_position_embeddings (the config's own value,
 * not original_max_position_embeddings), and base' = base·((factor·seq_len/max_pos) − (factor−1))^(d/(d−2)).
 *
 * HF's module is stateful (it only grows the table while generating, and resets below the original
 * length); this is the stateless function of the current length, i.e. what a fresh forward of that
 * length computes.
 */
import { defaultInvFreq } from "../../kernels/rope-table.ts"
import { inputError } from "../../common/errors.ts"
import { dynamicNtkBase } from "./factors.ts"
import { Params } from "./params.ts"
import { chosen, fmt } from "./table.ts"
import type { RopeMethod } from "./types.ts"

export const dynamicMethod: RopeMethod = {
  name: "dynamic",
  resolve: (spec) => {
    const factor = new Params(spec).requireNum("factor", { positive: true })
    const maxPos = spec.maxPositions
    if (!(maxPos > 0)) throw inputError("max_position_embeddings", `expected an integer > 0, got ${maxPos}`)
    return (length) => {
      const base = dynamicNtkBase(spec.base, spec.rotaryDim, factor, length, maxPos)
      const reason =
        length > maxPos
          ? `dynamic NTK: length ${length} > max_position_embeddings ${maxPos}, base ${fmt(spec.base)} → ${fmt(base)}`
          : `dynamic NTK: length ${length} ≤ max_position_embeddings ${maxPos}, plain RoPE`
      return chosen(spec, { method: "dynamic", reason, invFreq: defaultInvFreq(base, spec.rotaryDim) })
    }
  },
}
