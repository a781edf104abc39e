// The built-in `tiny` model: a deterministic random-init byte-level LLaMA folder the model loader accepts.
import { afterAll, describe, expect, test } from "bun:test"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { BYTE_BOS, BYTE_VOCAB_SIZE } from "../../plugins/data/tokenizer.ts"
import { inspectLlama } from "../../plugins/models/llama/model.ts"
import { writeRandomLlama } from "../../plugins/models/llama/random.ts"
import { TINY, tinyModel } from "../../plugins/models/tiny.ts"

const dir = mkdtempSync(join(tmpdir(), "ropeway-tiny-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("tiny", () => {
  test("same seed, same bytes; another seed, other weights; the loader accepts it", () => {
    writeRandomLlama(join(dir, "a"), { ...TINY, seed: 1 })
    writeRandomLlama(join(dir, "b"), { ...TINY, seed: 1 })
    writeRandomLlama(join(dir, "c"), { ...TINY, seed: 2 })
    const bytes = (d: string) => readFileSync(join(dir, d, "model.safetensors"))
    expect(bytes("a").equals(bytes("b"))).toBe(true)
    expect(bytes("a").equals(bytes("c"))).toBe(false)
    const m = inspectLlama(join(dir, "a"))
    expect(m.config.vocabSize).toBe(BYTE_VOCAB_SIZE)
    expect(m.config.rope.maxPositions).toBe(256)
    expect(m.config.numLayers).toBeGreaterThanOrEqual(2)
    expect(m.config.numLayers).toBeLessThanOrEqual(4)
    expect(m.config.hiddenSize).toBeGreaterThanOrEqual(64)
    expect(m.config.hiddenSize).toBeLessThanOrEqual(128)
    expect(m.rope(256).method).toBe("default")
    expect(JSON.parse(readFileSync(join(dir, "a", "config.json"), "utf8")).bos_token_id).toBe(BYTE_BOS)
    // weights: uniform with the intended spread (embeddings std 1)
    const embed = m.checkpoint.read("model.embed_tokens.weight")
    let s2 = 0
    for (const x of embed) s2 += x * x
    expect(Math.sqrt(s2 / embed.length)).toBeGreaterThan(0.95)
    expect(Math.sqrt(s2 / embed.length)).toBeLessThan(1.05)
    expect(tinyModel.description).toContain("RANDOM-INIT")
  })
})
