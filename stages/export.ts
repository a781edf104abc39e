/**
 * `export` (model + factor set) and `export-model` (a model alone, with its own rope_scaling): writes an
 * `export` folder artifact with each requested format and checks.json (plugins/export/run.ts): an HF folder
 * whose config.json carries the factors, LongRoPE factor CSVs, and GGUF for llama.cpp, each reloaded,
 * scored and compared after writing; a LoRA fine-tune's folder goes out merged, and `peft` writes its
 * adapter alone. The stage fails when a check does (checks.json says which).
 */
import { Effect, Schema } from "effect"
import { UnsupportedModel } from "../common/errors.ts"
import { doc, withDefault } from "../common/schema.ts"
import { defineStage, type Json, type StageContext } from "../pipeline/workflow/stage.ts"
import { EXPORT_FORMATS, type ExportChecks, runExport } from "../plugins/export/run.ts"
import { familyFor } from "../plugins/models/registry.ts"
import { attempt, attemptPromise, fail, gpuRuntime, inputPath, modelFamilies } from "./kit.ts"

export const EXPORT_KIND = "export"

const LengthParam = Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))

export const ExportParams = Schema.Struct({
  formats: Schema.NonEmptyArray(Schema.Literals(EXPORT_FORMATS)).pipe(doc("formats written: hf, csv, gguf, peft (a LoRA adapter alone); default hf, csv, gguf"), withDefault(["hf", "csv", "gguf"] as const)),
  dtype: Schema.Literals(["f32", "f16"]).pipe(doc("GGUF weight type (default f32; norms and factors stay f32)"), withDefault("f32" as const)),
  llamacpp: Schema.Boolean.pipe(doc("score the GGUF with llama.cpp when node-llama-cpp is installed (default true)"), withDefault(true)),
  checkLengths: Schema.optionalKey(Schema.Array(LengthParam).pipe(doc("token counts the checks score (default one ≤ L0 and one past it)"))),
})
export type ExportParams = typeof ExportParams.Type

/** One line per check for the step's result and error messages. */
export function summarizeChecks(c: ExportChecks): Json {
  return {
    ok: c.ok,
    formats: [...c.formats],
    checks: c.checks.map((k): Json => {
      if ("skipped" in k) return { format: k.format, skipped: k.skipped }
      if (k.format === "hf") return { format: "hf", path: k.path, ok: k.ok, maxAbsDiff: Math.max(...k.scored.map((s) => s.maxAbsDiff)) }
      if (k.format === "csv") return { format: "csv", ok: k.ok, files: k.files.length }
      if (k.format === "peft") return { format: "peft", path: k.path, ok: k.ok, tensors: k.tensors }
      const cpp = Array.isArray(k.llamacpp) ? Math.max(...k.llamacpp.map((s) => s.maxAbsDiff)) : null
      return { format: "gguf", path: k.path, ok: k.ok, rope: k.ropeForm, llamacppMaxAbsDiff: cpp }
    }),
  }
}

function runExportStage(ctx: StageContext<ExportParams, string, "export">) {
  return Effect.gen(function* () {
    const model = inputPath(ctx, "model")
    if (model === undefined) return yield* fail("export: input `model` (a Hugging Face model folder) is required")
    // The formats written (GGUF's llama architecture, the HF checks) are the llama family's.
    const families = yield* modelFamilies
    const family = yield* attempt("export", () => familyFor(families, model))
    if (family.name !== "llama") return yield* new UnsupportedModel({ file: model, message: `export: ${model} is a ${family.name}-family model; the export formats (HF longrope, GGUF llama) are written for the llama family` })
    const factors = inputPath(ctx, "factors")
    const rt = yield* gpuRuntime
    const lines: string[] = []
    const checks = yield* attemptPromise("export", () =>
      runExport(rt, {
        model,
        ...(factors === undefined ? {} : { factors }),
        sourceNames: { model: "inputs.model", factors: "inputs.factors" },
        out: ctx.outputs.export,
        formats: ctx.params.formats,
        dtype: ctx.params.dtype,
        llamacpp: ctx.params.llamacpp,
        ...(ctx.params.checkLengths === undefined ? {} : { checkLengths: ctx.params.checkLengths }),
        log: (l) => lines.push(l),
      }))
    for (const l of lines) yield* ctx.progress.log(l)
    const summary = summarizeChecks(checks)
    if (!checks.ok) return yield* fail(`export: a check failed (see ${ctx.outputs.export}/checks.json): ${JSON.stringify(summary)}`)
    return summary
  }).pipe(Effect.scoped)
}

export const exportStage = defineStage({
  name: "export",
  version: "1",
  description: "HF folder (rope_scaling longrope), LongRoPE factor CSVs and GGUF for llama.cpp from a model and its factor set, each reloaded and scored; writes checks.json",
  params: ExportParams,
  inputs: { model: "model", factors: "rope-factors" },
  outputs: { export: EXPORT_KIND },
  run: runExportStage,
})

/** `export-model`: the same for a model alone (its own rope_scaling). */
export const exportModelStage = defineStage({
  name: "export-model",
  version: "1",
  description: "HF folder, factor CSVs (longrope models) and GGUF for llama.cpp from a model with its own rope_scaling, each reloaded and scored",
  params: ExportParams,
  inputs: { model: "model" },
  outputs: { export: EXPORT_KIND },
  run: runExportStage,
})
