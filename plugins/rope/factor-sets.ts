/**
 * Factor-set files put to use without training: written into a model's config.json (`applyFactorSet`:
 * HF longrope for ≤ 2 sets, the longrope-research table for more) and merged into one length-bucketed
 * table (`mergeFactorSets`). The `apply-factors` and `merge-factors` stages run them.
 */
import { inputError } from "../../common/errors.ts"
import { configWithRope } from "../export/hf.ts"
import { type FactorSetFile, factorSetToHfLongrope, factorSetToScaling, ropeSpecFromConfig } from "./formats.ts"

/** How `apply-factors` writes a set file: auto (HF longrope for ≤ 2 sets, longrope-research for more), or one of them. */
export type ApplyFormat = "auto" | "longrope" | "longrope-research"

type Config = Record<string, unknown>

export interface AppliedRope {
  readonly config: Config
  readonly format: "longrope" | "longrope-research"
  /** Why this format (auto's choice, or what HF longrope could not carry). */
  readonly note: string
}

/**
 * The model's config.json with `f` written into it. The set file must fit the model's RoPE geometry
 * (rotary dim, base): factors searched for another model would apply silently wrong rotations.
 */
export function applyFactorSet(config: Config, f: FactorSetFile, format: ApplyFormat | undefined, where: string, configFile = "config.json"): AppliedRope {
  const spec = ropeSpecFromConfig(config, configFile)
  if (f.model.rotary_dim !== spec.rotaryDim || f.model.base !== spec.base) {
    throw inputError(where, `factor set is for rotary_dim ${f.model.rotary_dim}, base ${f.model.base}; the model has ${spec.rotaryDim}, ${spec.base}`)
  }
  const L0 = f.model.original_max_position_embeddings
  const maxPositions = Math.max(spec.maxPositions, f.sets[f.sets.length - 1]!.max_length)
  const research = (note: string): AppliedRope => ({
    config: configWithRope(config, { scaling: factorSetToScaling(f), originalMaxPositions: L0, maxPositions }),
    format: "longrope-research",
    note,
  })
  const want = format ?? "auto"
  if (want === "longrope-research") return research("longrope-research as asked")
  if (want === "auto" && f.sets.length > 2) return research(`${f.sets.length} sets: HF longrope holds two, so the longrope-research table`)
  let pair: Config
  try {
    pair = factorSetToHfLongrope(f, where)
  } catch (e) {
    // Start tokens or per-layer factors have no HF form; auto keeps them exact rather than dropping them.
    if (want === "longrope") throw e
    return research(`HF longrope cannot carry this set (${e instanceof Error ? e.message : String(e)}), so the longrope-research table`)
  }
  return {
    config: configWithRope(config, { scaling: pair, originalMaxPositions: L0, maxPositions }),
    format: "longrope",
    note: `${f.sets.length} set(s) as HF longrope (short_factor / long_factor; attention_factor from the long set)`,
  }
}

type SetEntry = FactorSetFile["sets"][number]
const lengthsText = (f: FactorSetFile): string => f.sets.map((s) => s.max_length).join(", ")

/**
 * `base` plus the sets of `extra` whose max_length is in `take` (all when undefined), sorted by
 * max_length. File-level m and n̂ move into the sets when the two files differ, so each set keeps the
 * values it was searched with.
 */
export function mergeFactorSets(base: FactorSetFile, extra: FactorSetFile, take: readonly number[] | undefined, names = { base: "factors", extra: "extra" }): FactorSetFile {
  const bad = (msg: string) => inputError("merge-factors", msg)
  const mb = base.model
  const me = extra.model
  if (mb.rotary_dim !== me.rotary_dim || mb.base !== me.base || mb.original_max_position_embeddings !== me.original_max_position_embeddings) {
    throw bad(`\`${names.base}\` is for rotary_dim ${mb.rotary_dim}, base ${mb.base}, L0 ${mb.original_max_position_embeddings}; \`${names.extra}\` for ${me.rotary_dim}, ${me.base}, ${me.original_max_position_embeddings}: not the same model`)
  }
  if (mb.num_hidden_layers !== undefined && me.num_hidden_layers !== undefined && mb.num_hidden_layers !== me.num_hidden_layers) {
    throw bad(`\`${names.base}\` has ${mb.num_hidden_layers} layers, \`${names.extra}\` ${me.num_hidden_layers}`)
  }
  for (const k of ["critical_dim", "dynamic"] as const) {
    if (base[k] !== extra[k]) throw bad(`${k} differs: ${JSON.stringify(base[k] ?? null)} in \`${names.base}\`, ${JSON.stringify(extra[k] ?? null)} in \`${names.extra}\``)
  }
  const wanted = take ?? extra.sets.map((s) => s.max_length)
  if (new Set(wanted).size !== wanted.length) throw bad(`take: expected distinct lengths, got ${JSON.stringify(take)}`)
  const picked = wanted.map((L) => {
    const s = extra.sets.find((x) => x.max_length === L)
    if (s === undefined) throw bad(`take: \`${names.extra}\` has no set with max_length ${L}; its sets: ${lengthsText(extra)}`)
    return s
  })
  const sameTop = base.mscale === extra.mscale && base.start_tokens === extra.start_tokens
  const own = (f: FactorSetFile, s: SetEntry): SetEntry => {
    if (sameTop) return s
    const out: SetEntry = { ...s }
    const m = s.mscale ?? f.mscale
    if (m !== undefined) out.mscale = m
    const n = s.start_tokens ?? f.start_tokens
    if (n !== undefined) out.start_tokens = n
    return out
  }
  const all = [...base.sets.map((s) => ({ s: own(base, s), from: names.base })), ...picked.map((s) => ({ s: own(extra, s), from: names.extra }))]
  all.sort((a, b) => a.s.max_length - b.s.max_length)
  for (let i = 1; i < all.length; i++) {
    if (all[i]!.s.max_length === all[i - 1]!.s.max_length) {
      const L = all[i]!.s.max_length
      throw bad(
        `two sets for max_length ${L} (from \`${all[i - 1]!.from}\` and \`${all[i]!.from}\`): a length bucket takes one set; ` +
          `list only new lengths in \`take\` (\`${names.base}\` has ${lengthsText(base)}; \`${names.extra}\` has ${lengthsText(extra)})`,
      )
    }
  }
  const sets = all.map((x) => x.s)
  const out: FactorSetFile = {
    format: "ropeway-factor-set",
    version: 1,
    model: { ...mb, ...(mb.num_hidden_layers === undefined && me.num_hidden_layers !== undefined ? { num_hidden_layers: me.num_hidden_layers } : {}) },
    sets,
    provenance: {
      method: "merge",
      run_id: null,
      lengths: [...new Set([...base.provenance.lengths, ...picked.map((s) => s.max_length)])].sort((a, b) => a - b),
      scale: sets[sets.length - 1]!.max_length / mb.original_max_position_embeddings,
      source: `merge of ${base.provenance.source ?? base.provenance.method} (${lengthsText(base)}) and ${extra.provenance.source ?? extra.provenance.method} (${picked.map((s) => s.max_length).join(", ")})`,
    },
  }
  if (sameTop) {
    if (base.mscale !== undefined) out.mscale = base.mscale
    if (base.start_tokens !== undefined) out.start_tokens = base.start_tokens
  }
  if (base.critical_dim !== undefined) out.critical_dim = base.critical_dim
  if (base.dynamic !== undefined) out.dynamic = base.dynamic
  return out
}

