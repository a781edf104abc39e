/**
 * `apply-factors` and `merge-factors`: put searched factor sets into a model without training.
 *
 * - `apply-factors` (inputs `model`, `factors`): an HF model folder whose config.json carries the factor
 *   set as rope_scaling: HF `longrope` (short/long pair) for ≤ 2 sets, ropeway's `longrope-research`
 *   table for more (or as `format` says); original_max_position_embeddings = the set file's L0,
 *   max_position_embeddings raised to the longest set. Weights are hard-linked (copied where linking
 *   fails), never rewritten.
 * - `merge-factors` (inputs `factors`, `extra`): one length-bucketed table from two factor-set files, e.g.
 *   the readjusted table plus the 512k set of another second search (method notes §1.6, §3: the paper's
 *   table has 4k, 8k, 256k, 512k, 1024k and 2048k sets). `take` picks which of `extra`'s sets (by
 *   max_length) join; a max_length present twice is an error, never a silent choice. Chain steps to merge
 *   more than two searches.
 * - `model-config` (input `model`): the same folder with config.json fields set (`set: {sliding_window:
 *   null}`), for the edits a recipe needs before any stage reads the model (Mistral's window, §2.5), so
 *   they live in the workflow, not in the user's copy of the weights.
 */
import { Effect, Schema } from "effect"
import { readFileSync } from "node:fs"
import { InputError } from "../pipeline/errors.ts"
import { definePlugin } from "../pipeline/workflow/plugin.ts"
import { defineStage, type Json, StageError } from "../pipeline/workflow/stage.ts"
import { writeFileAtomic } from "../pipeline/workflow/store.ts"
import { configWithRope, readConfigJson, writeHfFolder } from "../plugins/export/hf.ts"
import {
  type FactorSetFile, factorSetToHfLongrope, factorSetToScaling, formatFactorSetFile, parseFactorSetFile, ropeSpecFromConfig,
} from "../plugins/rope/formats.ts"

const PosInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const doc = (description: string) => <S extends Schema.Top>(s: S) => s.annotate({ description }) as S

const fail = (message: string, cause?: unknown) => new StageError({ message, ...(cause === undefined ? {} : { cause }) })
const asStageError = (e: unknown, what: string): StageError =>
  e instanceof StageError ? e : fail(e instanceof InputError ? e.message : `${what}: ${e instanceof Error ? e.message : String(e)}`, e)

// ---- apply ----------------------------------------------------------------------------------------

export const ApplyFactorsParams = Schema.Struct({
  format: Schema.optionalKey(
    Schema.Literals(["auto", "longrope", "longrope-research"]).pipe(
      doc("rope_scaling written: auto (default: HF longrope for ≤ 2 sets, longrope-research for more), or one of them"),
    ),
  ),
})
export type ApplyFactorsParams = typeof ApplyFactorsParams.Type

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
export function applyFactorSet(config: Config, f: FactorSetFile, format: ApplyFactorsParams["format"], where: string, configFile = "config.json"): AppliedRope {
  const spec = ropeSpecFromConfig(config, configFile)
  if (f.model.rotary_dim !== spec.rotaryDim || f.model.base !== spec.base) {
    throw new InputError(`${where}: factor set is for rotary_dim ${f.model.rotary_dim}, base ${f.model.base}; the model has ${spec.rotaryDim}, ${spec.base}`)
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

export const applyFactorsStage = defineStage({
  name: "apply-factors",
  version: "1",
  description: "an HF model folder whose config.json carries a factor set (weights linked, not trained): HF longrope for ≤ 2 sets, longrope-research for more",
  params: ApplyFactorsParams,
  inputs: { model: "model", factors: "rope-factors" },
  outputs: { model: "model" },
  run: (ctx) =>
    Effect.gen(function* () {
      const { applied, files, sets } = yield* Effect.try({
        try: () => {
          const f = parseFactorSetFile(readFileSync(ctx.inputs.factors, "utf8"), ctx.inputs.factors)
          const applied = applyFactorSet(readConfigJson(ctx.inputs.model), f, ctx.params.format, ctx.inputs.factors, `${ctx.inputs.model}/config.json`)
          const files = writeHfFolder(ctx.inputs.model, ctx.outputs.model, applied.config)
          return { applied, files, sets: f.sets.map((s) => s.max_length) }
        },
        catch: (e) => asStageError(e, "apply-factors"),
      })
      yield* ctx.progress.log(`apply-factors: ${applied.note}; max_position_embeddings ${String(applied.config["max_position_embeddings"])}`)
      yield* ctx.progress.report(1)
      return {
        format: applied.format,
        note: applied.note,
        sets,
        max_position_embeddings: applied.config["max_position_embeddings"] as number,
        files,
      } satisfies Json
    }),
})

// ---- merge ----------------------------------------------------------------------------------------

export const MergeFactorsParams = Schema.Struct({
  take: Schema.optionalKey(
    Schema.Array(PosInt).pipe(doc("max_length of each `extra` set to add (default: all of them); e.g. [524288] for a 512k second search's own set")),
  ),
})
export type MergeFactorsParams = typeof MergeFactorsParams.Type

type SetEntry = FactorSetFile["sets"][number]
const lengthsText = (f: FactorSetFile): string => f.sets.map((s) => s.max_length).join(", ")

/**
 * `base` plus the sets of `extra` whose max_length is in `take` (all when undefined), sorted by
 * max_length. File-level m and n̂ move into the sets when the two files differ, so each set keeps the
 * values it was searched with.
 */
export function mergeFactorSets(base: FactorSetFile, extra: FactorSetFile, take: readonly number[] | undefined, names = { base: "factors", extra: "extra" }): FactorSetFile {
  const bad = (msg: string) => new InputError(`merge-factors: ${msg}`)
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

export const mergeFactorsStage = defineStage({
  name: "merge-factors",
  version: "1",
  description: "one length-bucketed factor-set table from two (e.g. readjusted sets + another second search's set); a length given twice is an error",
  params: MergeFactorsParams,
  inputs: { factors: "rope-factors", extra: "rope-factors" },
  outputs: { factors: "rope-factors" },
  run: (ctx) =>
    Effect.gen(function* () {
      const merged = yield* Effect.try({
        try: () => {
          const base = parseFactorSetFile(readFileSync(ctx.inputs.factors, "utf8"), ctx.inputs.factors)
          const extra = parseFactorSetFile(readFileSync(ctx.inputs.extra, "utf8"), ctx.inputs.extra)
          const m = mergeFactorSets(base, extra, ctx.params.take)
          const out = { ...m, provenance: { ...m.provenance, run_id: ctx.key } }
          // The same reader every consumer uses checks what is written (order, factor counts).
          writeFileAtomic(ctx.outputs.factors, formatFactorSetFile(parseFactorSetFile(formatFactorSetFile(out), "merge-factors output")))
          return out
        },
        catch: (e) => asStageError(e, "merge-factors"),
      })
      yield* ctx.progress.report(1)
      return { sets: merged.sets.map((s) => s.max_length) } satisfies Json
    }),
})

// ---- model-config ----------------------------------------------------------------------------------

export const ModelConfigParams = Schema.Struct({
  set: Schema.Record(Schema.String, Schema.Unknown).pipe(doc("config.json fields to set (null writes null; e.g. { sliding_window: null })")),
})

// Fields that describe the weights: changing them would make the folder unreadable or silently wrong.
const SHAPE_FIELDS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "architectures", "model_type", "tie_word_embeddings"]

export const modelConfigStage = defineStage({
  name: "model-config",
  version: "1",
  description: "the model folder with config.json fields set (weights linked), e.g. { sliding_window: null } for full attention",
  params: ModelConfigParams,
  inputs: { model: "model" },
  outputs: { model: "model" },
  validate: (p) =>
    Object.keys(p.set).filter((k) => SHAPE_FIELDS.includes(k)).map((k) => ({ path: ["set", k], at: "key" as const, message: `"${k}" describes the weights; model-config does not change it` })),
  run: (ctx) =>
    Effect.gen(function* () {
      const changed = yield* Effect.try({
        try: () => {
          const config = readConfigJson(ctx.inputs.model)
          const out = { ...config, ...ctx.params.set }
          writeHfFolder(ctx.inputs.model, ctx.outputs.model, out)
          return Object.keys(ctx.params.set).filter((k) => JSON.stringify(config[k]) !== JSON.stringify(ctx.params.set[k]))
        },
        catch: (e) => asStageError(e, "model-config"),
      })
      yield* ctx.progress.report(1)
      return { changed } satisfies Json
    }),
})

export const applyFactorsPlugin = definePlugin({
  name: "ropeway-apply-factors",
  version: "0.1.0",
  description: "factor sets into a model folder without training; merging factor-set tables; config.json edits as a step",
  stages: [applyFactorsStage, mergeFactorsStage, modelConfigStage],
})
