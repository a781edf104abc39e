/**
 * `ropeway score` end to end: `--json` prints one object whose log-probs match the float64 reference,
 * `--rope-scaling` overrides config.json, `--text` tokenizes with the folder's tokenizer.json, and the
 * human summary names what a user wants to see.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { TINY_TOKENIZER, runCli } from "./cli-helpers.ts"
import { removeDir, tempDir, writeRandomModel } from "./random-model.ts"
import { randomTokens, referenceLogprobs } from "../../plugins/models/llama/model.ref.ts"

const root = tempDir("ropeway-score-")
afterAll(() => removeDir(root))

const dir = join(root, "model")
const rm = writeRandomModel(dir, { arch: "Qwen2ForCausalLM", hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96, vocab: 60, dtype: "BF16", maxPositions: 64, seed: 31 })
writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(TINY_TOKENIZER))
const ids = randomTokens(150, 60, 9)
const tokensFile = join(root, "tokens.json")
writeFileSync(tokensFile, JSON.stringify(ids))

interface ScoreJson {
  readonly logprobs: number[]
  readonly perplexity: number
  readonly tokens: number
}

function parseOne(stdout: string): ScoreJson {
  const lines = stdout.trim().split("\n")
  expect(lines).toHaveLength(1)
  return JSON.parse(lines[0]!) as ScoreJson
}

function maxAbsDiff(a: readonly number[], b: Float64Array): number {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!))
  return m
}

describe("ropeway score", () => {
  test("--json matches the float64 reference (150 tokens past max_position_embeddings 64, chunks of 64)", async () => {
    const r = await runCli(["score", "--model", dir, "--tokens", tokensFile, "--json", "--chunk", "64"])
    expect(r.code).toBe(0)
    const out = parseOne(r.stdout)
    const ref = referenceLogprobs(rm, ids)
    expect(out.tokens).toBe(150)
    expect(maxAbsDiff(out.logprobs, ref)).toBeLessThan(1e-4)
    const meanNll = -ref.reduce((a, b) => a + b, 0) / ref.length
    expect(Math.abs(out.perplexity - Math.exp(meanNll)) / Math.exp(meanNll)).toBeLessThan(1e-4)
  }, 60_000)

  test("--rope-scaling overrides config.json", async () => {
    const scaling = { rope_type: "linear", factor: 2.5 }
    const r = await runCli(["score", "--model", dir, "--tokens", tokensFile, "--json", "--rope-scaling", JSON.stringify(scaling)])
    expect(r.code).toBe(0)
    const out = parseOne(r.stdout)
    expect(maxAbsDiff(out.logprobs, referenceLogprobs(rm, ids, { ropeScaling: scaling }))).toBeLessThan(1e-4)
    // …and differs from plain RoPE, so the flag did something.
    expect(maxAbsDiff(out.logprobs, referenceLogprobs(rm, ids))).toBeGreaterThan(1e-3)
  }, 60_000)

  test("--text tokenizes with tokenizer.json (BOS from its post-processor)", async () => {
    const text = join(root, "text.txt")
    writeFileSync(text, "hello world hello")
    const r = await runCli(["score", "--model", dir, "--text", text, "--json"])
    expect(r.code).toBe(0)
    const out = parseOne(r.stdout)
    const expected = [0, 12, 6, 5, 7, 4, 8, 12]
    expect(out.tokens).toBe(expected.length)
    expect(maxAbsDiff(out.logprobs, referenceLogprobs(rm, expected))).toBeLessThan(1e-4)
  }, 60_000)

  test("human summary", async () => {
    const r = await runCli(["score", "--model", dir, "--tokens", tokensFile])
    expect(r.code).toBe(0)
    expect(r.stdout).toContain("perplexity")
    expect(r.stdout).toContain("tokens/s")
    expect(r.stdout).toContain("adapter")
    expect(r.stdout).toContain("150")
  }, 60_000)
})
