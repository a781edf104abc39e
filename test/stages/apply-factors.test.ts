// apply-factors / merge-factors: the config.json written (format by set count, positions raised, geometry
// checked), weights linked not rewritten, merged tables sorted with duplicates refused; and both stages in
// a workflow, fed by an embedded stage that writes given factor-set files.
import { describe, expect, test } from "bun:test"
import { Effect, Schema } from "effect"
import { readFileSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { defineStage, definePlugin } from "../../pipeline/workflow/index.ts"
import { applyFactorSet, mergeFactorSets } from "../../plugins/rope/factor-sets.ts"
import { type FactorSetFile, parseFactorSetFile, ropeSpecFromConfig } from "../../plugins/rope/formats.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { load, run, tempDir, yamlFile } from "../pipeline/helpers.ts"
import { writeRandomModel } from "../models/random-model.ts"

const L0 = 64
const set = (max_length: number, v: number, extra: Partial<FactorSetFile["sets"][number]> = {}) => ({ max_length, factors: [1, v, v, v], ...extra })
const file = (sets: FactorSetFile["sets"], top: Partial<FactorSetFile> = {}): FactorSetFile => ({
  format: "ropeway-factor-set",
  version: 1,
  model: { rotary_dim: 8, base: 10000, original_max_position_embeddings: L0, num_hidden_layers: 2 },
  sets,
  provenance: { method: "search", run_id: null, lengths: sets.map((s) => s.max_length), scale: sets[sets.length - 1]!.max_length / L0, created: "" },
  ...top,
})
const config = (): Record<string, unknown> => ({
  architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: 32, intermediate_size: 64, num_attention_heads: 4,
  num_key_value_heads: 4, num_hidden_layers: 2, max_position_embeddings: L0, rms_norm_eps: 1e-5, rope_theta: 10000, vocab_size: 300,
})

describe("applyFactorSet", () => {
  test("≤ 2 sets: HF longrope pair, L0 and max_position_embeddings from the set file", () => {
    const a = applyFactorSet(config(), file([set(64, 1), set(512, 8)]), undefined, "f.json")
    expect(a.format).toBe("longrope")
    const rs = a.config["rope_scaling"] as Record<string, unknown>
    expect(rs["rope_type"]).toBe("longrope")
    expect(rs["short_factor"]).toEqual([1, 1, 1, 1])
    expect(rs["long_factor"]).toEqual([1, 8, 8, 8])
    expect(a.config["max_position_embeddings"]).toBe(512)
    expect(a.config["original_max_position_embeddings"]).toBe(64)
    // the model reads it: short set up to L0, long set past it
    const rope = resolveRope(ropeSpecFromConfig(a.config))
    expect(Array.from(rope(64).invFreq as Float64Array)).toEqual(Array.from(rope(64).originalInvFreq))
    expect((rope(300).invFreq as Float64Array)[1]).toBeCloseTo(rope(300).originalInvFreq[1]! / 8, 12)
  })

  test("more than 2 sets: the longrope-research table, each length served by its bucket", () => {
    const f = file([set(64, 1.5), set(128, 2), set(512, 8), set(1024, 16)])
    const a = applyFactorSet(config(), f, "auto", "f.json")
    expect(a.format).toBe("longrope-research")
    expect((a.config["rope_scaling"] as { sets: unknown[] }).sets.length).toBe(4)
    expect(a.config["max_position_embeddings"]).toBe(1024)
    const rope = resolveRope(ropeSpecFromConfig(a.config))
    for (const [len, v] of [[60, 1.5], [100, 2], [300, 8], [1000, 16]] as const) {
      const t = rope(len)
      expect((t.invFreq as Float64Array)[2]).toBeCloseTo(t.originalInvFreq[2]! / v, 12)
    }
  })

  test("a longer source context is kept; explicit research format; start tokens fall back to research under auto", () => {
    const c = { ...config(), max_position_embeddings: 4096 }
    expect(applyFactorSet(c, file([set(64, 1), set(512, 8)]), "longrope-research", "f").config["max_position_embeddings"]).toBe(4096)
    expect(applyFactorSet(c, file([set(64, 1), set(512, 8)]), "longrope-research", "f").format).toBe("longrope-research")
    const withN = file([set(64, 1), set(512, 8, { start_tokens: 4 })])
    const auto = applyFactorSet(c, withN, "auto", "f")
    expect(auto.format).toBe("longrope-research")
    expect(auto.note).toContain("start_tokens")
    expect(() => applyFactorSet(c, withN, "longrope", "f")).toThrow(/start_tokens/)
  })

  test("a factor set for another geometry is refused", () => {
    expect(() => applyFactorSet({ ...config(), rope_theta: 500000 }, file([set(512, 8)]), undefined, "f.json")).toThrow(/f\.json: factor set is for rotary_dim 8, base 10000; the model has 8, 500000/)
  })
})

describe("mergeFactorSets", () => {
  const readjusted = file([set(64, 1.2), set(128, 2), set(256, 4), set(2048, 32)])
  const second512 = file([set(64, 1), set(256, 4), set(512, 8)])
  test("adds the taken sets in length order", () => {
    const m = mergeFactorSets(readjusted, second512, [512])
    expect(m.sets.map((s) => s.max_length)).toEqual([64, 128, 256, 512, 2048])
    expect(m.sets[3]!.factors).toEqual([1, 8, 8, 8])
    expect(m.provenance.lengths).toEqual([64, 128, 256, 512, 2048])
    expect(m.provenance.scale).toBe(2048 / L0)
    expect(() => parseFactorSetFile(JSON.stringify(m))).not.toThrow()
  })

  test("a length present twice is an error naming both files' lengths", () => {
    expect(() => mergeFactorSets(readjusted, second512, undefined)).toThrow(
      "merge-factors: two sets for max_length 64 (from `factors` and `extra`): a length bucket takes one set; list only new lengths in `take` (`factors` has 64, 128, 256, 2048; `extra` has 64, 256, 512)",
    )
    expect(() => mergeFactorSets(readjusted, second512, [256, 512])).toThrow(/two sets for max_length 256/)
  })

  test("take names a set that is not there; files for different models", () => {
    expect(() => mergeFactorSets(readjusted, second512, [1024])).toThrow("merge-factors: take: `extra` has no set with max_length 1024; its sets: 64, 256, 512")
    const other = { ...second512, model: { ...second512.model, original_max_position_embeddings: 128 } }
    expect(() => mergeFactorSets(readjusted, other, [512])).toThrow(/not the same model/)
  })

  test("file-level m and n̂ move into the sets when the files differ", () => {
    const a = file([set(64, 1), set(256, 4)], { mscale: "su" })
    const b = file([set(64, 1), set(512, 8)], { mscale: 1.1, start_tokens: 2 })
    const m = mergeFactorSets(a, b, [512])
    expect(m.mscale).toBeUndefined()
    expect(m.sets.map((s) => [s.max_length, s.mscale, s.start_tokens])).toEqual([[64, "su", undefined], [256, "su", undefined], [512, 1.1, 2]])
    const same = mergeFactorSets(a, file([set(512, 8)], { mscale: "su" }), undefined)
    expect(same.mscale).toBe("su")
    expect(same.sets.every((s) => s.mscale === undefined)).toBe(true)
  })
})

// A stage that writes the factor-set file given in its params: feeds the stages under test in a workflow.
const fixedFactors = defineStage({
  name: "fixed-factors",
  version: "1",
  params: Schema.Struct({ file: Schema.Unknown }),
  outputs: { factors: "rope-factors" },
  run: (ctx) => Effect.sync(() => writeFileSync(ctx.outputs.factors, JSON.stringify(ctx.params.file))),
})
const fixturePlugin = definePlugin({ name: "apply-factors-fixture", version: "1", stages: [fixedFactors] })

describe("in a workflow", () => {
  test("merge-factors then apply-factors: the table in config.json, the weights' bytes unchanged", async () => {
    const dir = tempDir()
    writeRandomModel(join(dir, "model"), { hidden: 32, layers: 2, heads: 4, kvHeads: 4, intermediate: 64, vocab: 300, maxPositions: L0 })
    const readjusted = file([set(64, 1.2), set(128, 2), set(256, 4), set(2048, 32)])
    const second = file([set(64, 1), set(256, 4), set(512, 8)])
    const wfFile = yamlFile(
      `name: apply
seed: 1
model: ./model
steps:
  readjust: { stage: fixed-factors, params: { file: ${JSON.stringify(readjusted)} } }
  second-512: { stage: fixed-factors, params: { file: ${JSON.stringify(second)} } }
  table: { stage: merge-factors, inputs: { factors: readjust.factors, extra: second-512.factors }, params: { take: [512] } }
  apply: { stage: apply-factors, inputs: { model: model, factors: table.factors } }
`,
      dir,
    )
    const wf = await load(wfFile, { plugins: [fixturePlugin] })
    const { manifest } = await run(wf, join(dir, "store"))
    expect(manifest.status).toBe("done")
    const out = manifest.steps.find((s) => s.name === "apply")!.outputs["model"]!.path
    const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>
    const rs = cfg["rope_scaling"] as { rope_type: string; sets: Array<{ max_length: number }> }
    expect(rs.rope_type).toBe("longrope-research")
    expect(rs.sets.map((s) => s.max_length)).toEqual([64, 128, 256, 512, 2048])
    expect(cfg["max_position_embeddings"]).toBe(2048)
    // linked by the stage; the store copies a link to a user's (writable) file, which stays the user's
    expect(readFileSync(join(out, "model.safetensors"))).toEqual(readFileSync(join(dir, "model", "model.safetensors")))
    expect(statSync(join(out, "model.safetensors")).ino).not.toBe(statSync(join(dir, "model", "model.safetensors")).ino)
    expect(manifest.steps.find((s) => s.name === "apply")!.result).toMatchObject({ format: "longrope-research", sets: [64, 128, 256, 512, 2048] })

    // the same wiring without `take`: the step fails with the duplicate named
    const bad = join(dir, "no-take.yaml")
    writeFileSync(bad, readFileSync(wfFile, "utf8").replace(", params: { take: [512] }", ""))
    const w = await load(bad, { plugins: [fixturePlugin] })
    const err = await run(w, join(dir, "store2")).then(() => undefined, (e: unknown) => e)
    expect(String((err as Error | undefined)?.message)).toContain("two sets for max_length 64")
  })
})
