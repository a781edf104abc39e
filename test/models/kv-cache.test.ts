/**
 * The llama model's paged, 16-bit KV caches: a sequence scored over many small pages gives the bits one
 * page gives (f32 and 16-bit caches); a 16-bit cache is the weights' default and halves the cache; its
 * deviation from an f32 cache is small and stated.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { randomTokens } from "../../plugins/models/llama/model.ref.ts"
import { writeRandomLlama } from "../../plugins/models/llama/random.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir } from "./random-model.ts"

const dir = tempDir("ropeway-kv-")
afterAll(() => removeDir(dir))
const SHAPE = { vocab: 300, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, maxPositions: 8192, embedStd: 0.5, seed: 4 }
writeRandomLlama(dir, SHAPE, { dtype: "BF16" })

const perplexity = (lp: Float64Array): number => Math.exp(-lp.reduce((a, b) => a + b, 0) / lp.length)

describe("paged KV caches", () => {
  test("4096 tokens over 64 pages of 64 rows = one page, bit for bit (f32 and bf16 caches)", async () => {
    const rt = await gpu()
    const model = await loadLlama(rt, dir)
    try {
      expect(model.kvDtype).toBe("bf16")
      const tokens = randomTokens(4097, SHAPE.vocab, 3)
      for (const kvCache of ["f32", "bf16"] as const) {
        const one = await model.logprobs(tokens, { kvCache })
        const paged = await model.logprobs(tokens, { kvCache, pageRows: 64 })
        // a chunk boundary (512) inside a page and pages inside chunks: both orders of events
        const odd = await model.logprobs(tokens, { kvCache, pageRows: 192, chunk: 300 })
        const oneOdd = await model.logprobs(tokens, { kvCache, chunk: 300 })
        expect(Array.from(paged)).toEqual(Array.from(one))
        expect(Array.from(odd)).toEqual(Array.from(oneOdd))
      }
    } finally {
      model.dispose()
    }
  }, 300_000)

  test("a 16-bit cache holds half the bytes; its log-probs stay near the f32 cache's", async () => {
    const rt = await gpu()
    const model = await loadLlama(rt, dir)
    try {
      const tokens = randomTokens(1025, SHAPE.vocab, 5)
      const peak = async (kvCache: "f32" | "bf16" | "f16") => {
        rt.flush()
        rt.trim()
        rt.resetPeak()
        const before = rt.stats.liveBytes
        const lp = await model.logprobs(tokens, { kvCache, chunk: 1024 })
        return { lp, bytes: rt.stats.peakBytes - before }
      }
      const f32 = await peak("f32")
      const bf16 = await peak("bf16")
      const f16 = await peak("f16")
      // 2 layers × K and V × 1024 rows × 64 values: 1 MiB in f32, 0.5 MiB in 16 bits (+ one f32 scratch page of K and of V)
      const cache32 = 2 * 2 * 1024 * 64 * 4
      expect(f32.bytes - bf16.bytes).toBeGreaterThan(cache32 / 2 - 2 * 1024 * 64 * 4)
      let dBf16 = 0
      let dF16 = 0
      for (let i = 0; i < f32.lp.length; i++) {
        dBf16 = Math.max(dBf16, Math.abs(bf16.lp[i]! - f32.lp[i]!))
        dF16 = Math.max(dF16, Math.abs(f16.lp[i]! - f32.lp[i]!))
      }
      const pplChange = (x: Float64Array) => Math.abs(perplexity(x) / perplexity(f32.lp) - 1)
      console.log(`16-bit KV vs f32 KV, 1024 tokens: bf16 max |Δ log p| ${dBf16.toExponential(2)}, perplexity ${(100 * pplChange(bf16.lp)).toFixed(3)}%; f16 ${dF16.toExponential(2)}, ${(100 * pplChange(f16.lp)).toFixed(3)}%`)
      expect(dBf16).toBeGreaterThan(0) // the rounding is real
      expect(dBf16).toBeLessThan(5e-2)
      expect(dF16).toBeLessThan(dBf16) // f16 keeps 3 more bits
      expect(pplChange(bf16.lp)).toBeLessThan(5e-3)
    } finally {
      model.dispose()
    }
  }, 300_000)
})
