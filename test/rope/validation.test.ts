// A malformed rope_scaling fails with one InputError naming the field and the expected value.
import { describe, expect, test } from "bun:test"
import { InputError } from "../../common/errors.ts"
import { resolveRope, type RopeSpec } from "../../plugins/rope/index.ts"

const spec = (scaling: Record<string, unknown> | undefined, over: Partial<RopeSpec> = {}): RopeSpec => ({
  headDim: 96,
  rotaryDim: 96,
  base: 10000,
  maxPositions: 131072,
  originalMaxPositions: 4096,
  numLayers: 4,
  scaling,
  ...over,
})

/** The error message, asserting it is an InputError. */
function fails(s: RopeSpec, length = 100): string {
  try {
    resolveRope(s)(length)
  } catch (e) {
    expect(e).toBeInstanceOf(InputError)
    return (e as Error).message
  }
  throw new Error("expected an InputError")
}

const ones = (n: number) => new Array(n).fill(1)

describe("validation errors name the field and the expected value", () => {
  test("unknown type", () => {
    const m = fails(spec({ type: "wibble", factor: 2 }))
    expect(m).toContain("rope_scaling.rope_type")
    expect(m).toContain('unknown rope type "wibble"')
    expect(m).toContain("longrope")
  })
  test("type that is not a string", () => expect(fails(spec({ rope_type: 3 }))).toContain("rope_scaling.rope_type: expected a string"))
  test("factor list of the wrong length (must be rotary_dim/2)", () => {
    const m = fails(spec({ type: "longrope", short_factor: ones(47), long_factor: ones(48) }))
    expect(m).toBe("rope_scaling.short_factor: expected a list of 48 numbers (rotary_dim/2), got 47")
  })
  test("factor list that is not a list", () => {
    expect(fails(spec({ type: "longrope", short_factor: ones(48), long_factor: 4 }))).toContain("rope_scaling.long_factor: expected a list of 48 numbers > 0")
  })
  test("a factor ≤ 0 in a list", () => {
    const long = ones(48)
    long[3] = 0
    expect(fails(spec({ type: "longrope", short_factor: ones(48), long_factor: long }))).toBe("rope_scaling.long_factor[3]: expected a number > 0, got 0")
  })
  test("a scalar factor ≤ 0, for each method that takes one", () => {
    for (const type of ["linear", "ntk", "dynamic", "yarn", "llama3"]) {
      const m = fails(spec({ type, factor: -2, low_freq_factor: 1, high_freq_factor: 4 }))
      expect(m).toBe("rope_scaling.factor: expected a number > 0, got -2")
    }
  })
  test("non-number factor", () => {
    expect(fails(spec({ type: "linear", factor: "4" }))).toBe('rope_scaling.factor: expected a number > 0, got "4"')
    expect(fails(spec({ type: "yarn", factor: 4, beta_fast: "x" }))).toContain("rope_scaling.beta_fast: expected a number ≥ 0")
  })
  test("missing factor", () => {
    expect(fails(spec({ type: "linear" }))).toBe("rope_scaling.factor: expected a number > 0, got nothing")
    expect(fails(spec({ type: "dynamic" }))).toContain("rope_scaling.factor")
  })
  test("missing original length (longrope, llama3, longrope-research)", () => {
    const none = { originalMaxPositions: undefined }
    expect(fails(spec({ type: "longrope", short_factor: ones(48), long_factor: ones(48) }, none))).toContain(
      "rope_scaling.original_max_position_embeddings: expected the pretrained context length",
    )
    expect(fails(spec({ type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4 }, none))).toContain("original_max_position_embeddings")
    expect(fails(spec({ type: "longrope-research", sets: [{ max_length: 8192, factors: ones(48) }] }, none))).toContain(
      "original_max_position_embeddings",
    )
  })
  test("llama3 needs high_freq_factor > low_freq_factor", () => {
    expect(fails(spec({ type: "llama3", factor: 8, low_freq_factor: 4, high_freq_factor: 1 }))).toContain(
      "rope_scaling.high_freq_factor: expected a number > low_freq_factor (4), got 1",
    )
    expect(fails(spec({ type: "llama3", factor: 8, high_freq_factor: 4 }))).toContain("rope_scaling.low_freq_factor: expected a number > 0, got nothing")
  })
  test("attention_factor and mscales must be > 0", () => {
    expect(fails(spec({ type: "yarn", factor: 4, attention_factor: 0 }))).toContain("rope_scaling.attention_factor: expected a number > 0")
    expect(fails(spec({ type: "longrope", short_factor: ones(48), long_factor: ones(48), long_mscale: -1 }))).toContain("rope_scaling.long_mscale")
  })
  test("the prefix follows where the scaling came from", () => {
    expect(fails(spec({ rope_type: "linear", factor: 0 }, { scalingKey: "rope_parameters" }))).toContain("rope_parameters.factor")
  })
  test("longrope-research: sets, ordering, per-layer rows, policies, start tokens, critical_dim", () => {
    const r = (extra: Record<string, unknown>, sets: unknown) => spec({ type: "longrope-research", sets, ...extra })
    expect(fails(r({}, []))).toContain("rope_scaling.sets: expected a non-empty list")
    expect(fails(r({}, [{ max_length: 8192, factors: ones(48) }, { max_length: 8192, factors: ones(48) }]))).toContain(
      "rope_scaling.sets[1].max_length: expected an integer > 8192",
    )
    expect(fails(r({}, [{ max_length: 8192, factors: [ones(48), ones(48)] }]))).toContain(
      "rope_scaling.sets[0].factors: expected 4 rows (num_hidden_layers) of 48 factors, or one row, got 2 rows",
    )
    expect(fails(r({}, [{ max_length: 8192, factors: [ones(48), ones(48), ones(48), ones(47)] }]))).toContain("rope_scaling.sets[0].factors[3]")
    expect(fails(r({ mscale: "loud" }, [{ max_length: 8192, factors: ones(48) }]))).toContain('rope_scaling.mscale: expected "su", "yarn" or a number > 0')
    expect(fails(r({}, [{ max_length: 8192, factors: ones(48), start_tokens: 1.5 }]))).toContain("rope_scaling.sets[0].start_tokens: expected an integer ≥ 0")
    expect(fails(r({ critical_dim: 48 }, [{ max_length: 8192, factors: ones(48) }]))).toContain('rope_scaling.critical_dim: expected "auto" or an integer in [0, 47]')
  })
  test("length must be a positive integer", () => {
    expect(fails(spec(undefined), 0)).toContain("length: expected an integer ≥ 1")
  })
})
