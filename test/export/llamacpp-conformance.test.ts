/**
 * Cross-runtime conformance: a tiny random LLaMA (2 layers, hidden 64, head_dim 16, GQA 4/2, vocab 280,
 * original context 64) exported to GGUF and scored by llama.cpp (node-llama-cpp's CPU build: F32 KV cache,
 * no flash attention, 2 threads) and by ropeway (`model.logprobs`) on the same tokens, for plain RoPE,
 * linear, YaRN and LongRoPE short and long. Agreement: max |Δ log p| ≤ 1e-3 over every position.
 *
 * What llama.cpp (the version node-llama-cpp 3.21.1 bundles) does differently from HF, and how the export
 * or the test deals with it:
 * - LongRoPE set choice: llama.cpp picks rope_factors_long when its allocated context per sequence exceeds
 *   original_context_length, and it rounds every context up to a multiple of 256 first; HF picks by the
 *   input's length. No GGUF key changes that, so each case allocates the context that makes llama.cpp choose
 *   the set HF chooses for that input, and the LongRoPE model has L0 = 256 (with L0 = 64 llama.cpp can only
 *   ever use the long set). A third case shows the difference: a short input in a long context gets the long
 *   set in llama.cpp, equal to ropeway forced to the long table and not to HF's choice.
 * - YaRN magnitude: llama.cpp multiplies cos/sin by rope.scaling.attn_factor × (0.1·ln factor + 1); the
 *   export writes attn_factor = m_HF / (0.1·ln factor + 1), so HF's default and an explicit attention_factor
 *   both come out right. Its llama architecture ignores yarn_beta_fast/slow (always 32/1): other betas go
 *   out as a fixed rope_freqs table instead (tested below).
 * - LongRoPE magnitude: rope.scaling.attn_factor, applied to both sets, as HF applies attention_factor.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test"
import { linkSync, mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { decodeGguf, writeGguf } from "../../common/gguf.ts"
import { llamaToGguf, readHostLlama } from "../../plugins/models/llama/gguf-export.ts"
import { inspectLlama, loadLlama } from "../../plugins/models/llama/model.ts"
import { randomLlamaConfig, writeRandomLlama } from "../../plugins/models/llama/random.ts"
import { llamaCppLogprobs } from "../../plugins/export/llamacpp.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir } from "../models/random-model.ts"
import { readFileSync } from "node:fs"

const TOL = 1e-3
const MODEL = { vocab: 280, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, maxPositions: 64, seed: 11 }
let root = ""

beforeAll(() => {
  root = tempDir("ropeway-conformance-")
  writeRandomLlama(join(root, "base"), MODEL)
})
afterAll(() => removeDir(root))

function tokens(n: number, seed = 5): number[] {
  let s = seed
  return Array.from({ length: n }, () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 16) % MODEL.vocab)
}

/** A model folder: the base weights (hard-linked) under a config with `patch` applied. */
function variant(name: string, patch: Record<string, unknown>): string {
  const dir = join(root, name)
  mkdirSync(dir, { recursive: true })
  linkSync(join(root, "base", "model.safetensors"), join(dir, "model.safetensors"))
  writeFileSync(join(dir, "config.json"), JSON.stringify({ ...randomLlamaConfig(MODEL), ...patch }, null, 2))
  return dir
}

async function toGguf(dir: string): Promise<{ path: string; form: string }> {
  const g = llamaToGguf(readHostLlama(inspectLlama(dir)), { dtype: "f32" })
  const path = join(dir, "model.gguf")
  await writeGguf(path, g)
  decodeGguf(new Uint8Array(readFileSync(path)), path) // it reads back
  return { path, form: g.rope.form }
}

const maxAbs = (a: Float64Array, b: Float64Array): number => {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!))
  return m
}

interface Case {
  readonly name: string
  readonly config: Record<string, unknown>
  readonly tokens: number
  /** Context allocated in llama.cpp. */
  readonly context: number
  readonly form: string
  /** Score ropeway with the table it would use at this length instead of the input's (llama.cpp's choice). */
  readonly ropewayLength?: number
}

const ramp = (hi: number) => Array.from({ length: 8 }, (_, i) => 1 + ((hi - 1) * i) / 7)
const longrope = {
  max_position_embeddings: 1024,
  original_max_position_embeddings: 256,
  rope_scaling: { rope_type: "longrope", short_factor: ramp(1.5), long_factor: ramp(12) },
}
const CASES: Case[] = [
  { name: "none", config: {}, tokens: 100, context: 256, form: "none" },
  { name: "linear", config: { max_position_embeddings: 256, rope_scaling: { rope_type: "linear", factor: 4 } }, tokens: 100, context: 256, form: "linear" },
  {
    name: "yarn",
    config: { max_position_embeddings: 256, rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 64 } },
    tokens: 100, context: 256, form: "yarn",
  },
  {
    name: "yarn-attention-factor",
    config: { max_position_embeddings: 256, rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 64, attention_factor: 1.3 } },
    tokens: 100, context: 256, form: "yarn",
  },
  {
    name: "yarn-betas",
    config: { max_position_embeddings: 256, rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 64, beta_fast: 8, beta_slow: 2 } },
    tokens: 100, context: 256, form: "freq-factors",
  },
  // HF: 100 ≤ 256 → short; llama.cpp: context 256 ≤ 256 → short.
  { name: "longrope-short", config: longrope, tokens: 100, context: 256, form: "longrope" },
  // HF: 300 > 256 → long; llama.cpp: context 512 > 256 → long.
  { name: "longrope-long", config: longrope, tokens: 300, context: 512, form: "longrope" },
  // llama.cpp's choice by context: 100 tokens in a 512 context → long (HF would use short).
  { name: "longrope-long-by-context", config: longrope, tokens: 100, context: 512, form: "longrope", ropewayLength: 300 },
]

describe("GGUF export scored by llama.cpp agrees with ropeway", () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const dir = variant(c.name, c.config)
      const { path, form } = await toGguf(dir)
      expect(form).toBe(c.form)
      const toks = tokens(c.tokens)
      const cpp = await llamaCppLogprobs(path, toks, { contextSize: c.context, threads: 2 })
      const rt = await gpu()
      const model = await loadLlama(rt, dir)
      const plain = await loadLlama(rt, join(root, "base"))
      try {
        const ours = await model.logprobs(toks, c.ropewayLength === undefined ? {} : { rope: model.rope(c.ropewayLength) })
        const diff = maxAbs(cpp, ours)
        console.log(`${c.name}: max |Δ log p| = ${diff.toExponential(2)} (${form}; ${model.rope(c.ropewayLength ?? c.tokens).reason})`)
        expect(diff).toBeLessThanOrEqual(TOL)
        if (c.name !== "none") {
          // The case must exercise its RoPE: plain RoPE scores differ far beyond the tolerance.
          expect(maxAbs(await plain.logprobs(toks), ours)).toBeGreaterThan(10 * TOL)
        }
        if (c.ropewayLength !== undefined) {
          // ... and llama.cpp's set is not HF's for this input.
          expect(maxAbs(cpp, await model.logprobs(toks))).toBeGreaterThan(10 * TOL)
        }
      } finally {
        model.dispose()
        plain.dispose()
      }
    })
  }
})
