/**
 * `export` (model + factor set) and `export-model` (a model alone, with its own rope_scaling): writes an
 * `export` folder artifact with each requested format and checks.json (plugins/export/run.ts): an HF folder
 * whose config.json carries the factors, LongRoPE factor CSVs, and GGUF for llama.cpp, each reloaded,
 * scored and compared after writing. The stage fails when a check does (checks.json says which).
 */
import { Effect, Option, Schema } from "effect"
import { acquireRuntime, Gpu, GpuUnavailable } from "../kernels/device.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { defineStage, type Json, type StageContext, StageError } from "../pipeline/workflow/stage.ts"
import { EXPORT_FORMATS, type ExportChecks, runExport } from "../plugins/export/run.ts"

export const EXPORT_KIND = "export"

const PosInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))
const withDefault = <S extends Schema.Top>(value: S["Encoded"]) => (s: S) => s.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value)))
const doc = (description: string) => <S extends Schema.Top>(s: S) => s.annotate({ description }) as S

export const ExportParams = Schema.Struct({
  formats: Schema.NonEmptyArray(Schema.Literals(EXPORT_FORMATS)).pipe(doc("formats written (default hf, csv, gguf)"), withDefault(["hf", "csv", "gguf"] as const)),
  dtype: Schema.Literals(["f32", "f16"]).pipe(doc("GGUF weight type (default f32; norms and factors stay f32)"), withDefault("f32" as const)),
  llamacpp: Schema.Boolean.pipe(doc("score the GGUF with llama.cpp when node-llama-cpp is installed (default true)"), withDefault(true)),
  checkLengths: Schema.optionalKey(Schema.Array(PosInt).pipe(doc("token counts the checks score (default one ≤ L0 and one past it)"))),
})
export type ExportParams = typeof ExportParams.Type

const fail = (message: string, cause?: unknown) => new StageError({ message, ...(cause === undefined ? {} : { cause }) })
const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** One line per check for the step's result and error messages. */
export function summarizeChecks(c: ExportChecks): Json {
  return {
    ok: c.ok,
    formats: [...c.formats],
    checks: c.checks.map((k): Json => {
      if ("skipped" in k) return { format: k.format, skipped: k.skipped }
      if (k.format === "hf") return { format: "hf", path: k.path, ok: k.ok, maxAbsDiff: Math.max(...k.scored.map((s) => s.maxAbsDiff)) }
      if (k.format === "csv") return { format: "csv", ok: k.ok, files: k.files.length }
      const cpp = Array.isArray(k.llamacpp) ? Math.max(...k.llamacpp.map((s) => s.maxAbsDiff)) : null
      return { format: "gguf", path: k.path, ok: k.ok, rope: k.ropeForm, llamacppMaxAbsDiff: cpp }
    }),
  }
}

function runExportStage(ctx: StageContext<ExportParams, string, "export">) {
  return Effect.gen(function* () {
    const inputs = ctx.inputs as Record<string, string | undefined>
    const model = inputs["model"]
    if (model === undefined) return yield* fail("export: input `model` (a Hugging Face model folder) is required")
    const factors = inputs["factors"]
    const shared = yield* Effect.serviceOption(Gpu)
    const rt: GpuRuntime = Option.isSome(shared)
      ? shared.value
      : yield* Effect.acquireRelease(
          Effect.tryPromise({ try: () => acquireRuntime(), catch: (e) => fail(e instanceof GpuUnavailable ? e.message : `no GPU: ${errText(e)}`, e) }),
          (r) => Effect.sync(() => r.destroy()),
        )
    const lines: string[] = []
    const checks = yield* Effect.tryPromise({
      try: () =>
        runExport(rt, {
          model,
          ...(factors === undefined ? {} : { factors }),
          out: ctx.outputs.export,
          formats: ctx.params.formats,
          dtype: ctx.params.dtype,
          llamacpp: ctx.params.llamacpp,
          ...(ctx.params.checkLengths === undefined ? {} : { checkLengths: ctx.params.checkLengths }),
          log: (l) => lines.push(l),
        }),
      catch: (e) => fail(`export: ${errText(e)}`, e),
    })
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
