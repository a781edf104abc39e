/**
 * `merge-factors` (inputs `factors`, `extra`): one length-bucketed table from two factor-set files, e.g.
 * the readjusted table plus the 512k set of another second search (method notes §1.6, §3: the paper's
 * table has 4k, 8k, 256k, 512k, 1024k and 2048k sets). `take` picks which of `extra`'s sets (by
 * max_length) join; a max_length present twice is an error, never a silent choice. Chain steps to merge
 * more than two searches.
 */
import { Effect, Schema } from "effect"
import { readFileSync } from "node:fs"
import { writeFileAtomic } from "../common/files.ts"
import { doc, PosInt } from "../common/schema.ts"
import { defineStage, type Json } from "../pipeline/workflow/stage.ts"
import { mergeFactorSets } from "../plugins/rope/factor-sets.ts"
import { formatFactorSetFile, parseFactorSetFile } from "../plugins/rope/formats.ts"
import { attempt } from "./kit.ts"

export const MergeFactorsParams = Schema.Struct({
  take: Schema.optionalKey(
    Schema.Array(PosInt).pipe(doc("max_length of each `extra` set to add (default: all of them); e.g. [524288] for a 512k second search's own set")),
  ),
})
export type MergeFactorsParams = typeof MergeFactorsParams.Type

export const mergeFactorsStage = defineStage({
  name: "merge-factors",
  version: "1",
  description: "one length-bucketed factor-set table from two (e.g. readjusted sets + another second search's set); a length given twice is an error",
  params: MergeFactorsParams,
  inputs: { factors: "rope-factors", extra: "rope-factors" },
  outputs: { factors: "rope-factors" },
  run: (ctx) =>
    Effect.gen(function* () {
      const merged = yield* attempt("merge-factors", () => {
        const base = parseFactorSetFile(readFileSync(ctx.inputs.factors, "utf8"), ctx.inputs.factors)
        const extra = parseFactorSetFile(readFileSync(ctx.inputs.extra, "utf8"), ctx.inputs.extra)
        const m = mergeFactorSets(base, extra, ctx.params.take)
        const out = { ...m, provenance: { ...m.provenance, run_id: ctx.key } }
        // The same reader every consumer uses checks what is written (order, factor counts).
        writeFileAtomic(ctx.outputs.factors, formatFactorSetFile(parseFactorSetFile(formatFactorSetFile(out), "merge-factors output")))
        return out
      })
      yield* ctx.progress.report(1)
      return { sets: merged.sets.map((s) => s.max_length) } satisfies Json
    }),
})

