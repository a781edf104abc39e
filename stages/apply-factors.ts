/**
 * `apply-factors` (inputs `model`, `factors`): an HF model folder whose config.json carries the factor set
 * as rope_scaling: HF `longrope` (short/long pair) for ≤ 2 sets, ropeway's `longrope-research` table for
 * more (or as `format` says); original_max_position_embeddings = the set file's L0, max_position_embeddings
 * raised to the longest set. Weights are hard-linked (copied where linking fails), never rewritten.
 */
import { Effect, Schema } from "effect"
import { readFileSync } from "node:fs"
import { doc } from "../common/schema.ts"
import { defineStage, type Json } from "../pipeline/workflow/stage.ts"
import { readConfigJson, writeHfFolder } from "../plugins/export/hf.ts"
import { applyFactorSet } from "../plugins/rope/factor-sets.ts"
import { parseFactorSetFile } from "../plugins/rope/formats.ts"
import { attempt } from "./kit.ts"

export const ApplyFactorsParams = Schema.Struct({
  format: Schema.optionalKey(
    Schema.Literals(["auto", "longrope", "longrope-research"]).pipe(
      doc("rope_scaling written: auto (default: HF longrope for ≤ 2 sets, longrope-research for more), or one of them"),
    ),
  ),
})
export type ApplyFactorsParams = typeof ApplyFactorsParams.Type

export const applyFactorsStage = defineStage({
  name: "apply-factors",
  version: "1",
  description: "an HF model folder whose config.json carries a factor set (weights linked, not trained): HF longrope for ≤ 2 sets, longrope-research for more",
  params: ApplyFactorsParams,
  inputs: { model: "model", factors: "rope-factors" },
  outputs: { model: "model" },
  run: (ctx) =>
    Effect.gen(function* () {
      const { applied, files, sets } = yield* attempt("apply-factors", () => {
        const f = parseFactorSetFile(readFileSync(ctx.inputs.factors, "utf8"), ctx.inputs.factors)
        const applied = applyFactorSet(readConfigJson(ctx.inputs.model), f, ctx.params.format, ctx.inputs.factors, `${ctx.inputs.model}/config.json`)
        const files = writeHfFolder(ctx.inputs.model, ctx.outputs.model, applied.config)
        return { applied, files, sets: f.sets.map((s) => s.max_length) }
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

