/**
 * `ropeway export --model DIR [--factors FILE] --out DIR [--format hf,csv,gguf] [--dtype f32|f16] [--no-llamacpp] [--json]`:
 * the `export` stage outside a workflow. Writes each format under --out plus checks.json, and prints what
 * was checked; exits 1 when a check fails.
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { Gpu } from "../../kernels/device.ts"
import { EXPORT_FORMATS, type ExportChecks, type ExportFormat, runExport } from "../../plugins/export/run.ts"
import { summarizeChecks } from "../../stages/export.ts"
import { inputError, StageError } from "../../common/errors.ts"

export function parseFormats(text: string): ExportFormat[] {
  const out = text.split(",").map((s) => s.trim()).filter((s) => s !== "")
  for (const f of out) {
    if (!(EXPORT_FORMATS as readonly string[]).includes(f)) throw inputError("--format", `unknown format "${f}"; expected a comma-separated list of ${EXPORT_FORMATS.join(", ")}`)
  }
  if (out.length === 0) throw inputError("--format", `expected at least one of ${EXPORT_FORMATS.join(", ")}`)
  return [...new Set(out)] as ExportFormat[]
}

const num = (x: number) => (x === 0 ? "0" : x.toExponential(2))

/** Human-readable lines for checks.json. */
export function formatChecks(c: ExportChecks, out: string): string {
  const lines = [`export to ${out}: ${c.ok ? "all checks passed" : "A CHECK FAILED"}`]
  for (const k of c.checks) {
    if ("skipped" in k) lines.push(`  ${k.format.padEnd(5)} skipped: ${k.skipped}`)
    else if (k.format === "hf") {
      lines.push(`  hf    ${k.path} (${k.ropeType}) reloaded; ${k.scored.map((s) => `${s.length} tokens max |Δ log p| ${num(s.maxAbsDiff)}`).join(", ")} [${k.ok ? "ok" : "FAIL"}]`)
      for (const s of k.vsFactorSet ?? []) lines.push(`        vs the factor set's own table at ${s.length}: ${num(s.maxAbsDiff)} (${s.note ?? ""})`)
    } else if (k.format === "csv") lines.push(`  csv   ${k.files.map((f) => f.file).join(", ")} re-read [${k.ok ? "ok" : "FAIL"}]`)
    else {
      const cpp = Array.isArray(k.llamacpp)
        ? k.llamacpp.map((s) => `${s.length} tokens max |Δ log p| ${num(s.maxAbsDiff)}`).join(", ")
        : `llama.cpp skipped: ${(k.llamacpp as { skipped: string }).skipped}`
      lines.push(`  gguf  ${k.path} (${k.ropeForm}, ${k.dtype}) decoded; ${cpp} [${k.ok ? "ok" : "FAIL"}]`)
    }
  }
  for (const n of c.notes) lines.push(`  note: ${n}`)
  return lines.join("\n")
}

export const exportCommand = Command.make(
  "export",
  {
    model: Flag.String("model").pipe(Flag.withDescription("Hugging Face model folder (config.json, *.safetensors)")),
    factors: Flag.String("factors").pipe(Flag.withDescription("ropeway factor-set file (rope.json); default: the model's own rope_scaling"), Flag.optional),
    out: Flag.String("out").pipe(Flag.withDescription("output folder (hf/, csv/, gguf/, checks.json)")),
    format: Flag.String("format").pipe(Flag.withDescription("comma-separated formats: hf, csv, gguf"), Flag.withDefault("hf,csv,gguf")),
    dtype: Flag.String("dtype").pipe(Flag.withDescription("GGUF weight type: f32 or f16"), Flag.withDefault("f32")),
    noLlamacpp: Flag.Boolean("no-llamacpp").pipe(Flag.withDescription("do not score the GGUF with llama.cpp"), Flag.withDefault(false)),
    json: Flag.Boolean("json").pipe(Flag.withDescription("print checks.json"), Flag.withDefault(false)),
  },
  Effect.fn(function* ({ model, factors, out, format, dtype, noLlamacpp, json }) {
    const formats = yield* Effect.try({ try: () => parseFormats(format), catch: (e) => e as Error })
    if (dtype !== "f32" && dtype !== "f16") return yield* Effect.fail(inputError("--dtype", `expected f32 or f16, got ${dtype}`))
    const checks = yield* Effect.gen(function* () {
      const rt = yield* Gpu
      return yield* Effect.tryPromise({
        try: () =>
          runExport(rt, {
            model, out, formats, dtype, llamacpp: !noLlamacpp,
            ...(Option.isSome(factors) ? { factors: factors.value } : {}),
          }),
        catch: (e) => (e instanceof Error ? e : new Error(String(e))),
      })
    }).pipe(Effect.provide(Gpu.layer))
    yield* Console.log(json ? JSON.stringify(checks, null, 2) : formatChecks(checks, out))
    if (!checks.ok) return yield* Effect.fail(new StageError({ message: `export: a check failed: ${JSON.stringify(summarizeChecks(checks))}` }))
  }),
).pipe(Command.withDescription("Export a model (and its factor set) as an HF folder, LongRoPE factor CSVs and GGUF, each checked after writing"))

/** The name the command index uses. */
export { exportCommand as export }
