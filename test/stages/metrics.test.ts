// metrics.json: the schema rejects numbers without their protocol; merging keeps one number per measurement.
import { afterAll, describe, expect, test } from "bun:test"
import { mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { emptyMetrics, mergeMetrics, parseMetrics, type PerplexityEntry, readMetrics, writeMetrics, writeRunMetrics } from "../../plugins/eval/metrics.ts"

const dir = mkdtempSync(join(tmpdir(), "ropeway-metrics-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const ppl = (method: string, length: number, value: number, protocol = "truncate"): PerplexityEntry => ({
  method, model: "base", length, value, protocol, samples: ["d#0"], bos: "BOS prepended", aggregation: "exp(mean)",
  windows: 1, tokens: length - 1, scale: length / 256, rope: "default: plain RoPE", data: "synthetic",
})

describe("metrics.json", () => {
  test("schema: every number needs its protocol, samples and a finite value", () => {
    expect(parseMetrics({ ...emptyMetrics(), perplexity: [ppl("pi", 512, 3.5)] }).perplexity[0]!.value).toBe(3.5)
    const { protocol: _, ...noProtocol } = ppl("pi", 512, 3.5)
    expect(() => parseMetrics({ ...emptyMetrics(), perplexity: [noProtocol] })).toThrow(/protocol/)
    expect(() => parseMetrics({ ...emptyMetrics(), perplexity: [{ ...ppl("pi", 512, 3.5), value: Number.NaN }] })).toThrow()
    expect(() => parseMetrics({ perplexity: [] })).toThrow(/passkey/)
    expect(() => writeMetrics(join(dir, "bad.json"), { ...emptyMetrics(), perplexity: [{ ...ppl("pi", 1, 2) }] })).toThrow()
  })

  test("merge: a re-measured number replaces the old one in place; others are kept in order", () => {
    const a = { ...emptyMetrics(), perplexity: [ppl("pi", 512, 3), ppl("none", 512, 9)] }
    const b = { ...emptyMetrics(), perplexity: [ppl("pi", 512, 4), ppl("pi", 512, 5, "sliding")] }
    expect(mergeMetrics(a, b).perplexity.map((e) => [e.method, e.protocol, e.value])).toEqual([["pi", "truncate", 4], ["none", "truncate", 9], ["pi", "sliding", 5]])
  })

  test("write is atomic (no temp files left) and the run-level file merges every metrics artifact", () => {
    const f1 = join(dir, "s1", "metrics.json")
    const f2 = join(dir, "s2", "metrics.json")
    writeMetrics(f1, { ...emptyMetrics(), perplexity: [ppl("pi", 512, 3)] })
    writeMetrics(f2, { ...emptyMetrics(), perplexity: [ppl("yarn", 512, 2)] })
    expect(readdirSync(join(dir, "s1"))).toEqual(["metrics.json"])
    const out = writeRunMetrics(dir, {
      steps: [
        { outputs: { metrics: { kind: "metrics", path: f1 } } },
        { outputs: { model: { kind: "model", path: join(dir, "nope") } } },
        { outputs: { metrics: { kind: "metrics", path: f2 } } },
      ],
    })
    expect(readMetrics(out!).perplexity.map((e) => e.method)).toEqual(["pi", "yarn"])
    expect(writeRunMetrics(dir, { steps: [] })).toBeUndefined()
  })
})
