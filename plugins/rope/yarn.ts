/**
 * `yarn`: HF _compute_yarn_parameters (current transformers).
 * - factor: rope_scaling.factor; only when absent, max_position_embeddings / original_max_position_embeddings
 *   (the explicit factor wins, transformers#38224 fixed by #40320).
 * - L0 for the correction range: original_max_position_embeddings (top level wins over rope_scaling, as
 *   standardize_rope_params does), else max_position_embeddings.
 * - beta_fast/beta_slow: `or` defaults 32/1 (so 0 also means the default), truncate default true.
 * - attention_factor: explicit, else get_mscale(factor, mscale)/get_mscale(factor, mscale_all_dim) when both
 *   are given and non-zero, else get_mscale(factor) = 0.1·ln(factor) + 1 (1 when factor ≤ 1).
 * The same table serves every length.
 */
import { inputError } from "../../common/errors.ts"
import { yarnFactors, yarnGetMscale, yarnRamp } from "./factors.ts"
import { Params } from "./params.ts"
import { chosen, divide, fmt } from "./table.ts"
import type { RopeMethod } from "./types.ts"

export const yarnMethod: RopeMethod = {
  name: "yarn",
  resolve: (spec) => {
    const p: Params = new Params(spec)
    const explicitOriginal = p.originalMax(false)
    const originalLength = explicitOriginal ?? spec.maxPositions
    let factor = p.num("factor", { positive: true })
    if (factor === undefined) {
      if (explicitOriginal === undefined) p.fail("factor", "a number > 0 (or original_max_position_embeddings to derive it)", undefined)
      factor = spec.maxPositions / originalLength
    }
    if (!(originalLength > 0)) throw inputError("max_position_embeddings", `expected an integer > 0, got ${originalLength}`)
    const explicitAttention = p.num("attention_factor", { positive: true })
    const m = p.num("mscale")
    const mAll = p.num("mscale_all_dim")
    const betaFast = p.num("beta_fast", { min: 0 }) || 32
    const betaSlow = p.num("beta_slow", { min: 0 }) || 1
    const truncate = p.bool("truncate") ?? true

    let attentionScale: number
    let attentionWhy: string
    if (explicitAttention !== undefined) {
      attentionScale = explicitAttention
      attentionWhy = "attention_factor"
    } else if (m && mAll) {
      attentionScale = yarnGetMscale(factor, m) / yarnGetMscale(factor, mAll)
      attentionWhy = `get_mscale(${fmt(factor)}, ${fmt(m)})/get_mscale(${fmt(factor)}, ${fmt(mAll)})`
    } else {
      attentionScale = yarnGetMscale(factor)
      attentionWhy = `0.1·ln(${fmt(factor)})+1`
    }
    const g = { rotaryDim: spec.rotaryDim, base: spec.base, originalLength }
    const opts = { betaFast, betaSlow, truncate }
    const { low, high } = yarnRamp(g, opts)
    const table = chosen(spec, {
      method: "yarn",
      reason:
        `YaRN factor ${fmt(factor)} over L0 ${originalLength}: dims ≤ ${fmt(low)} kept, ≥ ${fmt(high)} divided by ${fmt(factor)} ` +
        `(β ${fmt(betaFast)}/${fmt(betaSlow)}${truncate ? "" : ", untruncated"}); attention ${fmt(attentionScale)} = ${attentionWhy}`,
      invFreq: divide(spec, yarnFactors(g, factor, opts)),
      attentionScale,
    })
    return () => table
  },
}
