// The built-in `tiny` model: the shipped, ropeway-trained byte-level LLaMA. It must load, be what its
// checksum says, and do what it was trained for: retrieve passkeys inside its 512-token window.
import { afterAll, describe, expect, test } from "bun:test"
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { acquireRuntime } from "../../kernels/device.ts"
import { passkeyPrompt } from "../../plugins/data/prompts.ts"
import { Rng } from "../../common/rng.ts"
import { BYTE_BOS, BYTE_VOCAB_SIZE, byteTokenizer } from "../../plugins/data/tokenizer.ts"
import { generate } from "../../plugins/models/generate.ts"
import { inspectLlama, loadLlama } from "../../plugins/models/llama/model.ts"
import { TINY_CONTEXT, TINY_DIR, TINY_SHA256, tinyModel } from "../../plugins/models/tiny/tiny.ts"

const rt = await acquireRuntime()
afterAll(() => rt.destroy())

describe("tiny", () => {
  test("the shipped files: checksum, byte-level vocab, L0 512, plain RoPE", () => {
    expect(createHash("sha256").update(readFileSync(join(TINY_DIR, "model.safetensors"))).digest("hex")).toBe(TINY_SHA256)
    expect(tinyModel.version).toContain(TINY_SHA256.slice(0, 16))
    const m = inspectLlama(TINY_DIR)
    expect(m.config.vocabSize).toBe(BYTE_VOCAB_SIZE)
    expect(m.config.rope.maxPositions).toBe(TINY_CONTEXT)
    expect(m.rope(TINY_CONTEXT).method).toBe("default")
    expect(JSON.parse(readFileSync(join(TINY_DIR, "config.json"), "utf8")).bos_token_id).toBe(BYTE_BOS)
  })

  test("retrieves passkeys inside its window (paper prompt, 20 trials at depths 0..1, < 500 tokens)", async () => {
    const model = await loadLlama(rt, TINY_DIR)
    try {
      const tok = byteTokenizer()
      const rng = Rng.seeded(2024)
      let ok = 0
      const n = 20
      for (let i = 0; i < n; i++) {
        const p = passkeyPrompt({ tokenizer: tok, targetTokens: 500, rng, depth: i / (n - 1) })
        const r = await generate(model, p.ids, { maxNew: 8 })
        if (tok.decode(r.tokens).match(/\d+/)?.[0] === p.answer) ok++
      }
      // 17/20 measured when shipped (seed 1234 prompts: 17/20 at 500 tokens); the floor leaves room for
      // another device rounding a near-tie differently
      expect(ok).toBeGreaterThanOrEqual(14)
    } finally {
      model.dispose()
    }
  }, 120_000)
})
