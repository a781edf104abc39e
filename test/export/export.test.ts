/**
 * Exports (plugins/export, the export stages): HF folder, factor CSVs and GGUF from a tiny random model and
 * a factor-set file, each checked after writing (reloaded, scored, compared), through runExport and through
 * a workflow; plus the refusals for what a format cannot express.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import { parseFormats } from "../../cli/commands/export.ts"
import { exportStage } from "../../stages/export.ts"
import { layerCollect, loadWorkflow, type ProgressEvent, runWorkflow } from "../../cli/workflow.ts"
import { runExport, type ExportChecks, type GgufCheck, type HfCheck } from "../../plugins/export/run.ts"
import { decodeGguf } from "../../common/gguf.ts"
import { ggufRope } from "../../plugins/models/llama/gguf-export.ts"
import { writeRandomLlama } from "../../plugins/models/llama/random.ts"
import { formatFactorSetFile, parseFactorCsv, ropeSpecFromConfig, type FactorSetFile } from "../../plugins/rope/formats.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir, writeRandomModel } from "../models/random-model.ts"

const MODEL = { vocab: 270, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, maxPositions: 64, seed: 21 }
let root = ""
const model = () => join(root, "model")

const ramp = (lo: number, hi: number) => Array.from({ length: 8 }, (_, i) => lo + ((hi - lo) * i) / 7)
function factorSet(sets: { max_length: number; factors: number[] }[]): FactorSetFile {
  return {
    format: "ropeway-factor-set",
    version: 1,
    model: { rotary_dim: 16, base: 10000, original_max_position_embeddings: 64, num_hidden_layers: 2 },
    sets,
    provenance: { method: "test", run_id: null, lengths: sets.map((s) => s.max_length), scale: 4, created: "2026-01-01T00:00:00Z" },
  }
}

beforeAll(() => {
  root = tempDir("ropeway-export-")
  writeRandomLlama(model(), MODEL)
})
afterAll(() => removeDir(root))

const hfChecks = (c: ExportChecks) => c.checks.filter((k): k is HfCheck => k.format === "hf" && !("skipped" in k))
const ggufCheck = (c: ExportChecks) => c.checks.find((k): k is GgufCheck => k.format === "gguf" && !("skipped" in k))!

describe("runExport", () => {
  test("two sets: HF longrope pair, CSVs, GGUF; every check passes", async () => {
    const file = join(root, "two.json")
    writeFileSync(file, formatFactorSetFile(factorSet([{ max_length: 64, factors: ramp(1, 1.5) }, { max_length: 256, factors: ramp(1, 8) }])))
    const out = join(root, "out-two")
    const checks = await runExport(await gpu(), { model: model(), factors: file, out })
    expect(checks.ok).toBe(true)
    expect(JSON.parse(readFileSync(join(out, "checks.json"), "utf8")).ok).toBe(true)

    // HF: rope_scaling longrope with both vectors, L0 and the extended max; weights linked, not rewritten.
    const config = JSON.parse(readFileSync(join(out, "hf", "config.json"), "utf8"))
    expect(config.rope_scaling.rope_type).toBe("longrope")
    expect(config.rope_scaling.short_factor).toEqual(ramp(1, 1.5))
    expect(config.rope_scaling.long_factor).toEqual(ramp(1, 8))
    expect(config.original_max_position_embeddings).toBe(64)
    expect(config.max_position_embeddings).toBe(256)
    expect(statSync(join(out, "hf", "model.safetensors")).ino).toBe(statSync(join(model(), "model.safetensors")).ino)
    const [hf] = hfChecks(checks)
    expect(hf!.scored.map((s) => s.length)).toEqual([64, 128])
    for (const s of hf!.scored) expect(s.maxAbsDiff).toBeLessThanOrEqual(1e-4)
    // The factor set's own semantics give the short set m = 1; HF applies the long set's attention factor to both.
    expect(hf!.vsFactorSet![0]!.maxAbsDiff).toBeGreaterThan(1e-4)
    expect(hf!.vsFactorSet![1]!.maxAbsDiff).toBeLessThanOrEqual(1e-4)

    // CSVs: one per set, one value a line, exact.
    expect(parseFactorCsv(readFileSync(join(out, "csv", "0.0625k.csv"), "utf8"))).toEqual(Float64Array.from(ramp(1, 1.5)))
    expect(readFileSync(join(out, "csv", "0.25k.csv"), "utf8").trim().split("\n").length).toBe(8)

    // GGUF: longrope metadata and both factor tensors; llama.cpp agrees with ropeway.
    const g = ggufCheck(checks)
    expect(g.ropeForm).toBe("longrope")
    const decoded = decodeGguf(new Uint8Array(readFileSync(g.path)))
    expect(decoded.metadata.get("llama.rope.scaling.type")?.value).toBe("longrope")
    expect(decoded.metadata.get("llama.rope.scaling.original_context_length")?.value).toBe(64)
    expect(Array.from(decoded.tensors.find((t) => t.name === "rope_factors_long.weight")!.data)).toEqual(Array.from(Float32Array.from(ramp(1, 8))))
    expect(g.decoded.maxAbsDiff).toBe(0)
    expect(g.decoded.qkUnpermutedMaxAbsDiff).toBe(0)
    // L0 = 64 < 256: llama.cpp can only use the long set; the check compares with ropeway's long table and says so.
    expect(g.rope.map((r) => r.llamaCppFactors)).toEqual(["rope_factors_long", "rope_factors_long"])
    expect(g.rope[0]!.matchesHf).toBe(false)
    expect(checks.notes.some((n) => n.includes("multiples of 256"))).toBe(true)
    expect(Array.isArray(g.llamacpp)).toBe(true)
    for (const s of g.llamacpp as unknown as { maxAbsDiff: number }[]) expect(s.maxAbsDiff).toBeLessThanOrEqual(1e-3)
  })

  test("three sets: exact longrope-research folder plus an HF pair, and which sets the pair took", async () => {
    const file = join(root, "three.json")
    const sets = [{ max_length: 64, factors: ramp(1, 1.2) }, { max_length: 128, factors: ramp(1, 3) }, { max_length: 256, factors: ramp(1, 6) }]
    writeFileSync(file, formatFactorSetFile(factorSet(sets)))
    const out = join(root, "out-three")
    const checks = await runExport(await gpu(), { model: model(), factors: file, out, formats: ["hf", "gguf"], checkLengths: [64, 100, 200] })
    expect(checks.ok).toBe(true)
    expect(JSON.parse(readFileSync(join(out, "hf", "config.json"), "utf8")).rope_scaling.rope_type).toBe("longrope-research")
    const pair = JSON.parse(readFileSync(join(out, "hf-longrope", "config.json"), "utf8")).rope_scaling
    expect(pair.short_factor).toEqual(sets[0]!.factors)
    expect(pair.long_factor).toEqual(sets[2]!.factors)
    expect(checks.notes[0]).toContain("short_factor = sets[0] (max_length 64), long_factor = sets[2]")
    expect(hfChecks(checks).map((h) => h.ropeType)).toEqual(["longrope-research", "longrope"])
    expect(existsSync(join(out, "csv"))).toBe(false)
  })

  test("no factor set: the model's own rope_scaling (YaRN) goes to GGUF; CSV is skipped with a reason", async () => {
    const dir = join(root, "yarn-model")
    writeRandomLlama(dir, MODEL)
    const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"))
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...cfg, max_position_embeddings: 256, rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 64 } }))
    const checks = await runExport(await gpu(), { model: dir, out: join(root, "out-yarn"), checkLengths: [120] })
    expect(checks.ok).toBe(true)
    expect(checks.checks.find((k) => k.format === "csv")).toEqual({ format: "csv", skipped: expect.stringContaining("no factor set") })
    const g = ggufCheck(checks)
    expect(g.ropeForm).toBe("yarn")
    expect(g.rope[0]!.matchesHf).toBe(true)
    for (const s of g.llamacpp as unknown as { maxAbsDiff: number }[]) expect(s.maxAbsDiff).toBeLessThanOrEqual(1e-3)
  })
})

describe("the export-model stage in a workflow", () => {
  test("writes the export folder with checks.json for a longrope model (L0 256: llama.cpp's short and long sets)", async () => {
    const dir = join(root, "longrope-model")
    writeRandomLlama(dir, MODEL)
    const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"))
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ ...cfg, max_position_embeddings: 1024, original_max_position_embeddings: 256, rope_scaling: { rope_type: "longrope", short_factor: ramp(1, 1.3), long_factor: ramp(1, 10) } }),
    )
    const wf = join(root, "wf.yaml")
    writeFileSync(wf, `name: export-test\nseed: 1\nmodel: ${dir}\nsteps:\n  export:\n    stage: export-model\n    inputs: { model: model }\n    params: { formats: [hf, csv, gguf], checkLengths: [100, 300] }\n`)
    const events: ProgressEvent[] = []
    const rt = await gpu()
    const result = await Effect.runPromise(
      Effect.flatMap(loadWorkflow(wf), (w) => runWorkflow(w, { store: join(root, "runs"), printRunDir: false })).pipe(
        Effect.provide(layerCollect(events)),
        Effect.provideService(Gpu, rt),
      ),
    )
    const step = result.manifest.steps.find((s) => s.name === "export")!
    expect(step.status).toBe("done")
    const out = step.outputs["export"]!.path
    const checks = JSON.parse(readFileSync(join(out, "checks.json"), "utf8")) as ExportChecks
    expect(checks.ok).toBe(true)
    // a workflow's artifact names its inputs: its bytes must not depend on where the store is
    expect(checks.source).toEqual({ model: "inputs.model", factors: null })
    expect(readFileSync(join(out, "checks.json"), "utf8")).not.toContain(root)
    const g = ggufCheck(checks)
    expect(g.rope.map((r) => [r.llamaCppFactors, r.matchesHf])).toEqual([["rope_factors_short", true], ["rope_factors_long", true]])
    expect(existsSync(join(out, "csv", "0.25k.csv"))).toBe(true)
    expect(existsSync(join(out, "csv", "1k.csv"))).toBe(true)
  })
})

describe("refusals", () => {
  const spec = (scaling: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    ropeSpecFromConfig({ hidden_size: 64, num_attention_heads: 4, num_hidden_layers: 2, max_position_embeddings: 256, rope_scaling: scaling, ...extra })
  test("a length-dependent method has no GGUF form", () => {
    expect(() => ggufRope(spec({ rope_type: "dynamic", factor: 4 }))).toThrow(/changes with length/)
  })
  test("different short/long mscales do not fit GGUF's one attention factor", () => {
    const s = spec({ rope_type: "longrope", short_factor: ramp(1, 1), long_factor: ramp(1, 4), short_mscale: 1, long_mscale: 1.2 }, { original_max_position_embeddings: 64 })
    expect(() => ggufRope(s)).toThrow(/one attention factor/)
  })
  test("fixed tables (NTK) go out as rope_freqs", () => {
    const r = ggufRope(spec({ rope_type: "ntk", factor: 4 }))
    expect(r.form).toBe("freq-factors")
    expect(r.tensors.map((t) => t.name)).toEqual(["rope_freqs.weight"])
  })
  test("--format is validated", () => {
    expect(parseFormats("gguf,hf")).toEqual(["gguf", "hf"])
    expect(() => parseFormats("hf,onnx")).toThrow(/unknown format "onnx"/)
  })
})

describe("a Phi-3 source (fused qkv / gate_up, longrope)", () => {
  test("exports to the llama architecture (split, q/k permuted) and llama.cpp agrees", async () => {
    const dir = join(root, "phi3")
    writeRandomModel(dir, {
      arch: "Phi3ForCausalLM", hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96, vocab: 260, maxPositions: 1024, originalMaxPositions: 256, seed: 4,
      ropeScaling: { rope_type: "longrope", short_factor: ramp(1, 1.4), long_factor: ramp(1, 9) },
    })
    const checks = await runExport(await gpu(), { model: dir, out: join(root, "out-phi3"), formats: ["gguf"], checkLengths: [90, 280] })
    expect(checks.ok).toBe(true)
    const g = ggufCheck(checks)
    expect(g.rope.map((r) => r.llamaCppFactors)).toEqual(["rope_factors_short", "rope_factors_long"])
    for (const s of g.llamacpp as unknown as { maxAbsDiff: number }[]) expect(s.maxAbsDiff).toBeLessThanOrEqual(1e-3)
  })
})

describe("the export stage (model + factor set)", () => {
  const ctx = (inputs: Record<string, string>, out: string) => ({
    step: "export", seed: 1, key: "k", inputs, outputs: { export: out }, outDir: root, checkpointDir: join(root, "ckpt"),
    params: { formats: ["hf", "csv", "gguf"] as const, dtype: "f32" as const, llamacpp: true, checkLengths: [64, 100] },
    progress: { report: () => Effect.void, log: () => Effect.void },
  })
  test("writes the folder and returns a summary; a factor set for another model fails naming the file", async () => {
    const file = join(root, "stage.json")
    writeFileSync(file, formatFactorSetFile(factorSet([{ max_length: 64, factors: ramp(1, 1) }, { max_length: 512, factors: ramp(1, 8) }])))
    const rt = await gpu()
    const out = join(root, "out-stage")
    const summary = (await Effect.runPromise(exportStage.run(ctx({ model: model(), factors: file }, out) as never).pipe(Effect.provideService(Gpu, rt)))) as {
      ok: boolean; checks: { format: string; ok: boolean }[]
    }
    expect(summary.ok).toBe(true)
    expect(summary.checks.map((c) => [c.format, c.ok])).toEqual([["hf", true], ["csv", true], ["gguf", true]])
    expect(existsSync(join(out, "checks.json"))).toBe(true)

    const bad = join(root, "bad.json")
    writeFileSync(bad, formatFactorSetFile({ ...factorSet([{ max_length: 512, factors: [...ramp(1, 8), ...ramp(1, 8)] }]), model: { rotary_dim: 32, base: 10000, original_max_position_embeddings: 64 } }))
    const exit = await Effect.runPromiseExit(exportStage.run(ctx({ model: model(), factors: bad }, join(root, "out-bad")) as never).pipe(Effect.provideService(Gpu, rt)))
    expect(exit._tag).toBe("Failure")
    expect(JSON.stringify(exit)).toContain("bad.json: factor set is for rotary_dim 32")
  })
})
