// `ropeway rope`: the report for a model folder, as text and JSON, and through the CLI flags.
import { afterAll, describe, expect, test } from "bun:test"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import { formatRopeReport, rope, ropeReport } from "../../cli/commands/rope.ts"
import { InputError, ModelNotFound } from "../../common/errors.ts"

const dir = mkdtempSync(join(tmpdir(), "ropeway-rope-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const short = Array.from({ length: 48 }, (_, i) => 1 + i / 100)
const long = Array.from({ length: 48 }, (_, i) => 1 + i)
writeFileSync(
  join(dir, "config.json"),
  JSON.stringify({
    architectures: ["Phi3ForCausalLM"],
    hidden_size: 3072,
    intermediate_size: 8192,
    num_attention_heads: 32,
    num_hidden_layers: 32,
    vocab_size: 32064,
    max_position_embeddings: 131072,
    original_max_position_embeddings: 4096,
    rope_theta: 10000.0,
    rope_scaling: { type: "longrope", short_factor: short, long_factor: long },
  }),
)

describe("ropeway rope", () => {
  test("reports divisors, chosen set and attention scale", () => {
    const r = ropeReport(dir, 4097)
    expect(r.method).toBe("longrope")
    expect(r.reason).toContain("long_factor: length 4097 > original_max_position_embeddings 4096")
    expect(r.rotaryDim).toBe(96)
    expect(r.startTokens).toBe(0)
    expect(r.attentionScale.toFixed(4)).toBe("1.1902")
    ;(r.factors as number[]).forEach((x, i) => expect(x).toBeCloseTo(long[i]!, 12))
    const text = formatRopeReport(r)
    expect(text).toContain("method          longrope")
    expect(text).toContain("attention scale 1.19024")
    expect(text.split("\n").filter((l) => /^\s+\d+\s/.test(l)).length).toBe(48)
  })
  test("--rope-scaling replaces the config's", () => {
    const r = ropeReport(dir, 100, JSON.stringify({ rope_type: "linear", factor: 4 }))
    expect(r.method).toBe("linear")
    expect(r.factors.every((x) => Math.abs((x as number) - 4) < 1e-12)).toBe(true)
    expect(ropeReport(dir, 100, "null").method).toBe("default")
  })
  test("bad input is a one-line tagged error naming the flag or field", () => {
    expect(() => ropeReport(dir, 0)).toThrow(InputError)
    expect(() => ropeReport(dir, 100, JSON.stringify({ rope_type: "linear", factor: 0 }))).toThrow("--rope-scaling.factor: expected a number > 0, got 0")
    expect(() => ropeReport(join(dir, "missing"), 100)).toThrow(ModelNotFound) // its own tag: a missing model
  })
  test("CLI flags: --model --length --json", async () => {
    const lines: string[] = []
    const log = console.log
    console.log = (...a: unknown[]) => void lines.push(a.join(" "))
    try {
      await Effect.runPromise(
        Command.runWith(rope, { version: "0" })(["--model", dir, "--length", "4096", "--json"]).pipe(Effect.provide(NodeServices.layer)),
      )
    } finally {
      console.log = log
    }
    const out = JSON.parse(lines.join("\n"))
    expect(out.reason).toContain("short_factor")
    expect(out.factors.length).toBe(48)
  })
})
