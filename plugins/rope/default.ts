/** `default`: plain RoPE, θ_i = base^(−2i/d_r). */
import { defaultInvFreq } from "../../kernels/rope-table.ts"
import { chosen } from "./table.ts"
import type { RopeMethod } from "./types.ts"

export const defaultMethod: RopeMethod = {
  name: "default",
  resolve: (spec) => {
    const table = chosen(spec, { method: "default", reason: "plain RoPE", invFreq: defaultInvFreq(spec.base, spec.rotaryDim) })
    return () => table
  },
}
