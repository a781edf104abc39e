/**
 * `longrope` (old name `su`): Phi-3 / HF _compute_longrope_parameters.
 * - short_factor, long_factor: rotary_dim/2 divisors each.
 * - Switching (HF's dynamic_rope_update): seq_len = max(position_ids)+1 = length; long_factor when
 *   seq_len > original_max_position_embeddings, else short_factor. So length L0 is short, L0+1 long.
 * - attention_factor: explicit, else sqrt(1 + ln(factor)/ln(L0)) with factor = rope_scaling.factor, or
 *   max_position_embeddings / L0 when absent (1 when factor ≤ 1). HF applies the same value to both sets.
 * - short_mscale / long_mscale (Phi-3-small, Phi-3.5-MoE): when present they replace the attention scale of
 *   their set, as vLLM does (HF ignores them).
 * - original_max_position_embeddings is required (top level wins over rope_scaling, as in transformers):
 *   without it the switch point is unknowable.
 */
import { Params } from "./params.ts"
import { chosen, divide, fmt } from "./table.ts"
import type { RopeMethod, RopeSpec } from "./types.ts"

/** HF's default longrope attention factor. */
export function longropeAttentionFactor(factor: number, originalLength: number): number {
  return factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(originalLength))
}

export interface LongropeParams {
  readonly short: Float64Array
  readonly long: Float64Array
  readonly originalLength: number
  readonly factor: number
  readonly attentionFactor: number
  readonly attentionWhy: string
  readonly shortMscale: number | undefined
  readonly longMscale: number | undefined
}

/** Validates a longrope rope_scaling object. */
export function readLongrope(spec: RopeSpec): LongropeParams {
  const p: Params = new Params(spec)
  const half = spec.rotaryDim / 2
  const short = p.factorList("short_factor", half)
  const long = p.factorList("long_factor", half)
  const originalLength = p.originalMax(true)!
  const explicitFactor = p.num("factor", { positive: true })
  const factor = explicitFactor ?? spec.maxPositions / originalLength
  const explicitAttention = p.num("attention_factor", { positive: true })
  const attentionFactor = explicitAttention ?? longropeAttentionFactor(factor, originalLength)
  const attentionWhy =
    explicitAttention !== undefined
      ? "attention_factor"
      : factor <= 1
        ? `factor ${fmt(factor)} ≤ 1`
        : `sqrt(1 + ln ${fmt(factor)} / ln ${originalLength})${explicitFactor === undefined ? ` with factor = max_position_embeddings ${spec.maxPositions} / ${originalLength}` : ""}`
  return {
    short,
    long,
    originalLength,
    factor,
    attentionFactor,
    attentionWhy,
    shortMscale: p.num("short_mscale", { positive: true }),
    longMscale: p.num("long_mscale", { positive: true }),
  }
}

export const longropeMethod: RopeMethod = {
  name: "longrope",
  resolve: (spec) => {
    const lp = readLongrope(spec)
    const make = (isLong: boolean, length: number) => {
      const set = isLong ? "long_factor" : "short_factor"
      const own = isLong ? lp.longMscale : lp.shortMscale
      const attentionScale = own ?? lp.attentionFactor
      const why = own !== undefined ? (isLong ? "long_mscale" : "short_mscale") : lp.attentionWhy
      const cmp = isLong ? ">" : "≤"
      return chosen(spec, {
        method: "longrope",
        reason:
          `${set}: length ${length} ${cmp} original_max_position_embeddings ${lp.originalLength}; ` +
          `attention ${fmt(attentionScale)} = ${why}`,
        invFreq: divide(spec, isLong ? lp.long : lp.short),
        attentionScale,
      })
    }
    return (length) => make(length > lp.originalLength, length)
  },
}
