// HF config.json rope fields, LongRoPE factor CSVs and ropeway's factor-set file: read, write, round-trip.
import { describe, expect, test } from "bun:test"
import { InputError } from "../../common/errors.ts"
import {
  collapseRows,
  factorSetFromHfLongrope,
  factorSetToHfLongrope,
  factorSetToScaling,
  formatFactorCsv,
  formatFactorSetFile,
  parseFactorCsv,
  parseFactorSetFile,
  parseScalingJson,
  ropeSpecFromConfig,
  scalingOf,
  withScaling,
  type FactorSetFile,
} from "../../plugins/rope/formats.ts"
import { resolveRope } from "../../plugins/rope/index.ts"

const message = (f: () => unknown): string => {
  try {
    f()
  } catch (e) {
    expect(e).toBeInstanceOf(InputError)
    return (e as Error).message
  }
  throw new Error("expected an InputError")
}

const phi3 = {
  architectures: ["Phi3ForCausalLM"],
  hidden_size: 3072,
  num_attention_heads: 32,
  num_hidden_layers: 32,
  max_position_embeddings: 131072,
  original_max_position_embeddings: 4096,
  rope_theta: 10000.0,
  rope_scaling: { type: "longrope", short_factor: new Array(48).fill(1.05), long_factor: new Array(48).fill(20) },
}

describe("HF config.json", () => {
  test("Phi-3 rope_scaling with `type`", () => {
    const s = ropeSpecFromConfig(phi3)
    expect(s).toMatchObject({ headDim: 96, rotaryDim: 96, base: 10000, maxPositions: 131072, originalMaxPositions: 4096, numLayers: 32, scalingKey: "rope_scaling" })
    expect(resolveRope(s)(4097).reason).toContain("long_factor")
  })
  test("transformers 5 rope_parameters with rope_type and rope_theta inside; head_dim and partial rotary", () => {
    const s = ropeSpecFromConfig({
      hidden_size: 2048,
      num_attention_heads: 16,
      head_dim: 256,
      partial_rotary_factor: 0.5,
      num_hidden_layers: 2,
      max_position_embeddings: 32768,
      rope_parameters: { rope_type: "yarn", rope_theta: 1e6, factor: 4, original_max_position_embeddings: 8192 },
    })
    expect(s).toMatchObject({ headDim: 256, rotaryDim: 128, base: 1e6, originalMaxPositions: 8192, scalingKey: "rope_parameters" })
    expect(resolveRope(s)(1).method).toBe("yarn")
  })
  test("old name `su`; top-level original length wins over rope_scaling's", () => {
    const s = ropeSpecFromConfig({ ...phi3, rope_scaling: { ...phi3.rope_scaling, type: "su", original_max_position_embeddings: 2048 } })
    expect(s.originalMaxPositions).toBe(4096)
    expect(resolveRope(s)(4096).reason).toContain("short_factor")
  })
  test("no scaling, null scaling, empty rope_parameters: plain RoPE", () => {
    expect(scalingOf({ rope_scaling: null }).scaling).toBeUndefined()
    expect(scalingOf({ rope_parameters: {} }).scaling).toBeUndefined()
    expect(resolveRope(ropeSpecFromConfig({ ...phi3, rope_scaling: null }))(5).method).toBe("default")
  })
  test("errors name the field", () => {
    expect(message(() => ropeSpecFromConfig({ ...phi3, max_position_embeddings: "big" }))).toBe('config.json: max_position_embeddings: expected an integer > 0, got "big"')
    expect(message(() => ropeSpecFromConfig({ ...phi3, rope_scaling: [1] }))).toContain("config.json: rope_scaling: expected an object")
    expect(message(() => ropeSpecFromConfig({ ...phi3, partial_rotary_factor: 1.5 }))).toContain("partial_rotary_factor: expected a number in (0, 1]")
    expect(message(() => parseScalingJson("{oops"))).toContain("--rope-scaling: expected a JSON object")
  })
  test("write rope_scaling / rope_parameters, `type`, `rope_type` or both; reads back the same table", () => {
    const scaling = { type: "longrope", short_factor: phi3.rope_scaling.short_factor, long_factor: phi3.rope_scaling.long_factor }
    const a = withScaling(phi3, scaling, { key: "rope_scaling", typeKey: "both" })
    expect((a["rope_scaling"] as Record<string, unknown>)["type"]).toBe("longrope")
    expect((a["rope_scaling"] as Record<string, unknown>)["rope_type"]).toBe("longrope")
    const b = withScaling(phi3, scaling, { key: "rope_parameters" })
    expect(b["rope_scaling"]).toBeUndefined()
    expect(b["rope_parameters"]).toMatchObject({ rope_type: "longrope", rope_theta: 10000 })
    const back = JSON.parse(JSON.stringify(b))
    for (const L of [4096, 4097]) {
      const t1 = resolveRope(ropeSpecFromConfig(phi3))(L)
      const t2 = resolveRope(ropeSpecFromConfig(back))(L)
      expect(Array.from(t2.invFreq as Float64Array)).toEqual(Array.from(t1.invFreq as Float64Array))
      expect(t2.attentionScale).toBe(t1.attentionScale)
    }
  })
})

describe("LongRoPE factor CSV", () => {
  test("one value a line (numpy savetxt)", () => {
    const f = parseFactorCsv("1.000000000000000000e+00\n2.5e+00\n3.0\n", "a.csv", 3)
    expect(Array.from(f as Float64Array)).toEqual([1, 2.5, 3])
  })
  test("one comma-separated row, trailing comma tolerated", () => {
    expect(Array.from(parseFactorCsv("1.0,2.0, 4.0,\n") as Float64Array)).toEqual([1, 2, 4])
  })
  test("layers × d/2 matrix, space-padded, comments and blank lines", () => {
    const f = parseFactorCsv("# la2 128k\n 1.00 , 2.00 , 3.00\n\n1.0,2.0,3.0\n", "m.csv", 3) as Float64Array[]
    expect(f.length).toBe(2)
    expect(Array.from(f[1]!)).toEqual([1, 2, 3])
    expect(Array.from(collapseRows(f) as Float64Array)).toEqual([1, 2, 3])
  })
  test("whitespace-separated rows", () => {
    expect((parseFactorCsv("1 2\n3 4\n") as Float64Array[]).map((r) => Array.from(r))).toEqual([[1, 2], [3, 4]])
  })
  test("errors name the file and line", () => {
    expect(message(() => parseFactorCsv("1\n-2\n", "f.csv"))).toBe('f.csv:2: value 1: expected a number > 0, got "-2"')
    expect(message(() => parseFactorCsv("1,2\n1,2,3\n", "f.csv"))).toContain("f.csv:row 2: expected 2 factors")
    expect(message(() => parseFactorCsv("1\n2\n", "f.csv", 48))).toBe("f.csv: expected 48 factors (rotary_dim/2), got 2")
    expect(message(() => parseFactorCsv("\n", "f.csv"))).toContain("empty file")
  })
  test("write → read round-trips exactly (vector lines, vector row, matrix)", () => {
    const v = Float64Array.from({ length: 64 }, (_, i) => 1 + Math.PI * i * 0.1234567)
    expect(Array.from(parseFactorCsv(formatFactorCsv(v)) as Float64Array)).toEqual(Array.from(v))
    expect(Array.from(parseFactorCsv(formatFactorCsv(v, "row")) as Float64Array)).toEqual(Array.from(v))
    const m = [v, v.map((x) => x * 2)]
    const back = parseFactorCsv(formatFactorCsv(m)) as Float64Array[]
    expect(back.map((r) => Array.from(r))).toEqual(m.map((r) => Array.from(r)))
  })
})

describe("ropeway factor-set file", () => {
  const file: FactorSetFile = {
    format: "ropeway-factor-set",
    version: 1,
    model: { rotary_dim: 8, base: 10000, original_max_position_embeddings: 4096, num_hidden_layers: 2 },
    mscale: "su",
    sets: [
      { max_length: 8192, factors: [1.1, 1.2, 1.5, 2], start_tokens: 0 },
      { max_length: 131072, factors: [1, 4, 16, 33.5], mscale: "su" },
    ],
    provenance: { method: "search", run_id: "run-42", lengths: [131072], scale: 32, created: "2026-11-28T18:00:00.000Z" },
  }
  test("round-trips through JSON", () => {
    const text = formatFactorSetFile(file)
    expect(parseFactorSetFile(text)).toEqual(file)
    expect(formatFactorSetFile(parseFactorSetFile(text))).toBe(text)
  })
  test("becomes a longrope-research rope_scaling", () => {
    const spec = { headDim: 8, rotaryDim: 8, base: 10000, maxPositions: 131072, originalMaxPositions: undefined, numLayers: 2, scaling: factorSetToScaling(file) }
    const r = resolveRope(spec)
    expect(r(8192).reason).toContain("set 0 of 2")
    expect(r(8193).attentionScale).toBeCloseTo(Math.sqrt(1 + Math.log(32) / Math.log(4096)), 15)
  })
  test("exports to HF longrope: short = the set serving L0, long = the last", () => {
    const hf = factorSetToHfLongrope(file)
    expect(hf).toMatchObject({ rope_type: "longrope", short_factor: [1.1, 1.2, 1.5, 2], long_factor: [1, 4, 16, 33.5], original_max_position_embeddings: 4096 })
    expect(hf["attention_factor"]).toBeCloseTo(1.1902, 4)
    expect(message(() => factorSetToHfLongrope({ ...file, start_tokens: 4 }))).toContain("start_tokens")
  })
  test("HF longrope → factor-set file gives the same tables at every length", () => {
    const spec = ropeSpecFromConfig(phi3)
    const f = factorSetFromHfLongrope(spec, { run_id: null, lengths: [131072], scale: 32, created: "2026-11-28T00:00:00Z" })
    const again = parseFactorSetFile(formatFactorSetFile(f))
    const research = resolveRope({ ...spec, scaling: factorSetToScaling(again) })
    const hf = resolveRope(spec)
    for (const L of [1, 4096, 4097, 131072, 200000]) {
      expect(Array.from(research(L).invFreq as Float64Array)).toEqual(Array.from(hf(L).invFreq as Float64Array))
      expect(research(L).attentionScale).toBe(hf(L).attentionScale)
    }
    expect(factorSetToHfLongrope(again)).toMatchObject({ short_factor: phi3.rope_scaling.short_factor, long_factor: phi3.rope_scaling.long_factor })
  })
  test("validation names the path", () => {
    expect(message(() => parseFactorSetFile("{", "r.json"))).toContain("r.json: expected JSON")
    const bad = { ...file, sets: [{ max_length: 8192, factors: [1, 2, 3] }] }
    expect(message(() => parseFactorSetFile(JSON.stringify(bad), "r.json"))).toContain("r.json: sets[0].factors: expected a list of 4 numbers")
    const neg = { ...file, sets: [{ max_length: 8192, factors: [1, 2, 3, -4] }] }
    expect(message(() => parseFactorSetFile(JSON.stringify(neg), "r.json"))).toContain("sets[0].factors[3]")
    const noProv = { ...file, provenance: undefined }
    expect(message(() => parseFactorSetFile(JSON.stringify(noProv), "r.json"))).toContain("provenance")
  })
})
