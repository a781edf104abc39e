/**
 * Greedy generation with a KV cache across RoPE factor-set boundaries (plugins/models/llama/generate.ts).
 *
 * At every step, the next-token log-probs of each policy are compared with a fresh full prefill of the
 * same sequence (a new KV cache) under the table the policy should be using, and with the float64
 * reference fed RoPE parameters this file computes itself from the transformers / LongRoPE formulas:
 * - rerotate and reprefill: the table for the current length (short → long at L0+1, buckets, dynamic NTK);
 * - fixed: the table for prompt + maxNew throughout.
 * One head_dim (32) everywhere, so the attention kernel compiles once.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { type BoundaryPolicy, type GenerateResult, argmax, generate } from "../../plugins/models/generate.ts"
import { type LlamaModel, loadLlama } from "../../plugins/models/llama/model.ts"
import type { ChosenTable } from "../../plugins/rope/index.ts"
import { gpu } from "../gpu-shared.ts"
import { TINY_TOKENIZER, ownStderr, runCli } from "./cli-helpers.ts"
import { type RandomModel, type RandomModelOptions, removeDir, rng, tempDir, writeRandomModel } from "./random-model.ts"
import { type ExplicitRope, randomTokens, referenceDecode, referenceNextLogprobs } from "../../plugins/models/llama/model.ref.ts"
import { commands } from "../../cli/commands/index.ts"

const TOL = 1e-4
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})

const HD = 32 // head_dim
const HALF = HD / 2
const BASE = 10000

/** θ_i = base^(−2i/d) in float64, written out here (not plugins/rope). */
const theta = (base = BASE, d = HD): Float64Array => Float64Array.from({ length: d / 2 }, (_, i) => 1 / base ** ((2 * i) / d))

/** HF longrope: inv_freq = 1/(ext_factor_i · base^(2i/d)). */
const divided = (factors: readonly number[]): Float64Array => Float64Array.from(factors, (f, i) => 1 / (f * BASE ** ((2 * i) / HD)))

function factorsFrom(seed: number, lo: number, hi: number): number[] {
  const r = rng(seed)
  // Non-decreasing, as searched factors are; from lo to hi with jitter.
  return Array.from({ length: HALF }, (_, i) => lo + ((hi - lo) * i) / (HALF - 1) + 0.05 * r())
}

const base = (o: Partial<RandomModelOptions>): RandomModelOptions => ({
  hidden: 64,
  layers: 2,
  heads: 2,
  kvHeads: 1,
  headDim: HD,
  intermediate: 96,
  vocab: 97,
  seed: 21,
  ...o,
})

async function load(o: RandomModelOptions): Promise<{ rm: RandomModel; model: LlamaModel; dir: string }> {
  const dir = tempDir()
  dirs.push(dir)
  const rm = writeRandomModel(dir, o)
  const model = await loadLlama(await gpu(), dir)
  return { rm, model, dir }
}

/** Next-token log-probs after a fresh prefill of `tokens` (new KV cache) with `table`. */
async function freshPrefill(model: LlamaModel, tokens: readonly number[], table: ChosenTable): Promise<Float64Array> {
  const s = model.session(tokens.length)
  try {
    return await s.feed(tokens, table)
  } finally {
    s.dispose()
  }
}

const maxAbsDiff = (a: Float64Array, b: Float64Array): number => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!))
  return m
}

/** Largest minus second-largest: argmax comparisons are only meaningful with a margin. */
function margin(a: Float64Array): number {
  const best = argmax(a)
  let second = -Infinity
  for (let i = 0; i < a.length; i++) if (i !== best) second = Math.max(second, a[i]!)
  return a[best]! - second
}

interface Checked {
  readonly result: GenerateResult
  /** Max |Δ| over the steps against a fresh prefill (new KV cache) with the table for that step. */
  readonly vsPrefill: number
  /** Max |Δ| against the float64 reference of the policy's semantics, with this file's own RoPE formulas. */
  readonly vsReference: number
  readonly greedyChecked: number
}

/**
 * Generates with `policy` and checks every step: the log-probs against a fresh GPU prefill with the model's
 * table for `tableLength(length)`, and against the float64 reference with `expectedRope`: a whole-sequence
 * forward for fixed/reprefill, the re-rotated-cache decoder (referenceDecode) for rerotate; and that the
 * token chosen is the reference's argmax wherever that is clear.
 */
async function check(
  model: LlamaModel,
  rm: RandomModel,
  prompt: readonly number[],
  maxNew: number,
  policy: BoundaryPolicy,
  tableLength: (length: number) => number,
  expectedRope: (length: number) => ExplicitRope,
  chunk?: number,
): Promise<Checked> {
  const result = await generate(model, prompt, { maxNew, policy, keepLogprobs: true, ...(chunk === undefined ? {} : { chunk }) })
  expect(result.tokens.length).toBe(maxNew)
  const seq = [...prompt, ...result.tokens]
  const decoded = policy === "rerotate" ? referenceDecode(rm, seq.slice(0, prompt.length + maxNew - 1), prompt.length, (n) => expectedRope(tableLength(n))) : undefined
  let vsPrefill = 0
  let vsReference = 0
  let greedyChecked = 0
  for (const [k, step] of result.steps.entries()) {
    const prefix = seq.slice(0, step.length)
    const table = model.rope(tableLength(step.length))
    expect(step.reason).toBe(table.reason)
    const fresh = await freshPrefill(model, prefix, table)
    vsPrefill = Math.max(vsPrefill, maxAbsDiff(step.logprobs!, fresh))
    const ref = decoded?.[k] ?? referenceNextLogprobs(rm, prefix, { rope: expectedRope(tableLength(step.length)) })
    vsReference = Math.max(vsReference, maxAbsDiff(step.logprobs!, ref))
    if (margin(ref) > 1e-3) {
      expect(step.token).toBe(argmax(ref))
      greedyChecked++
    }
  }
  return { result, vsPrefill, vsReference, greedyChecked }
}

const report = (name: string, c: Checked, steps: number): void =>
  console.log(`  ${name}: vs fresh prefill ${c.vsPrefill.toExponential(2)}, vs float64 ${c.vsReference.toExponential(2)}, greedy = float64 argmax at ${c.greedyChecked}/${steps} steps`)

// ---- longrope (Phi-3): short → long at L0 + 1 ------------------------------------------------------

const L0 = 32
const SHORT = factorsFrom(1, 1, 1.6)
const LONG = factorsFrom(2, 1, 7)
const longropeScaling = { rope_type: "longrope", short_factor: SHORT, long_factor: LONG }
/** HF: factor = max_position_embeddings / original (128/32 = 4), attention_factor = sqrt(1 + ln 4 / ln 32). */
const LONGROPE_M = Math.sqrt(1 + Math.log(128 / L0) / Math.log(L0))
const longropeRef = (length: number): ExplicitRope => ({ invFreq: divided(length > L0 ? LONG : SHORT), attentionFactor: LONGROPE_M })

describe("generation across the longrope short → long boundary", () => {
  const scaled = { maxPositions: 128, originalMaxPositions: L0, ropeScaling: longropeScaling }
  const prompt = randomTokens(24, 97, 5)
  const maxNew = 14 // lengths 24..37: the forward at 33 is the first long one

  test("rerotate, one layer: every step equals a fresh prefill with the new table and the float64 reference", async () => {
    const { rm, model } = await load(base({ ...scaled, layers: 1 }))
    try {
      const c = await check(model, rm, prompt, maxNew, "rerotate", (n) => n, longropeRef)
      report("rerotate, 1 layer", c, maxNew)
      expect(c.vsPrefill).toBeLessThan(TOL)
      expect(c.vsReference).toBeLessThan(TOL)
      expect(c.greedyChecked).toBeGreaterThan(maxNew / 2)
      expect(c.result.switches.length).toBe(1)
      const sw = c.result.switches[0]!
      expect(sw.at).toBe(L0 + 1)
      expect(sw.reason).toContain("long_factor")
      expect(sw.action).toContain(`rerotated ${L0} cached keys`)
      expect(c.result.steps.find((s) => s.length === L0)!.reason).toContain("short_factor")
      expect(c.result.steps.find((s) => s.length === L0 + 1)!.reason).toContain("long_factor")

      // The check has teeth: after the switch, a prefill with the stale short table is far off.
      const step = c.result.steps.find((s) => s.length === L0 + 3)!
      const seq = [...prompt, ...c.result.tokens].slice(0, step.length)
      const stale = await freshPrefill(model, seq, model.rope(L0))
      expect(maxAbsDiff(step.logprobs!, stale)).toBeGreaterThan(1e-2)
    } finally {
      model.dispose()
    }
  })

  test("rerotate, two layers: equals the float64 re-rotated-cache decoder; not a fresh prefill (layer ≥ 1 hidden states)", async () => {
    const { rm, model } = await load(base(scaled))
    try {
      const c = await check(model, rm, prompt, maxNew, "rerotate", (n) => n, longropeRef)
      report("rerotate, 2 layers", c, maxNew)
      expect(c.vsReference).toBeLessThan(TOL)
      // Layer 1's cached keys and values came from layer-0 attention under the short table; a fresh
      // prefill recomputes them under the long one. Re-rotation cannot recover that: it is exact only
      // for the first layer, so in a deeper model rerotate is an approximation of reprefill.
      expect(c.vsPrefill).toBeGreaterThan(1e-3)
      expect(c.result.switches.map((s) => s.at)).toEqual([L0 + 1])
    } finally {
      model.dispose()
    }
  })

  test("reprefill, two layers: every step equals a fresh prefill with the new table", async () => {
    const { rm, model } = await load(base(scaled))
    try {
      const c = await check(model, rm, prompt, maxNew, "reprefill", (n) => n, longropeRef)
      report("reprefill", c, maxNew)
      expect(c.vsPrefill).toBeLessThan(TOL)
      expect(c.vsReference).toBeLessThan(TOL)
      expect(c.result.switches.map((s) => s.at)).toEqual([L0 + 1])
      expect(c.result.switches[0]!.action).toContain(`re-prefilled ${L0 + 1} tokens`)
    } finally {
      model.dispose()
    }
  })

  test("fixed, two layers: the long table (prompt + maxNew > L0) from the prefill on, no switch", async () => {
    const { rm, model } = await load(base(scaled))
    try {
      const total = prompt.length + maxNew
      const c = await check(model, rm, prompt, maxNew, "fixed", () => total, longropeRef)
      report("fixed", c, maxNew)
      expect(c.vsPrefill).toBeLessThan(TOL)
      expect(c.vsReference).toBeLessThan(TOL)
      expect(c.result.switches).toEqual([])
      for (const s of c.result.steps) expect(s.reason).toContain("long_factor")
      // A session that stays short (prompt + maxNew ≤ L0) keeps the short table.
      const short = await generate(model, prompt.slice(0, 20), { maxNew: 4, policy: "fixed" })
      for (const s of short.steps) expect(s.reason).toContain("short_factor")
    } finally {
      model.dispose()
    }
  })

  test("short_mscale / long_mscale: the attention scale changes at the switch too (rerotate, one layer)", async () => {
    const scaling = { ...longropeScaling, short_mscale: 1.05, long_mscale: 1.3 }
    const { rm, model } = await load(base({ maxPositions: 128, originalMaxPositions: L0, ropeScaling: scaling, layers: 1, seed: 23 }))
    try {
      const ref = (n: number): ExplicitRope => ({ invFreq: divided(n > L0 ? LONG : SHORT), attentionFactor: n > L0 ? 1.3 : 1.05 })
      const c = await check(model, rm, randomTokens(30, 97, 9), 6, "rerotate", (n) => n, ref)
      report("m 1.05 → 1.3", c, 6)
      expect(c.vsPrefill).toBeLessThan(TOL)
      expect(c.vsReference).toBeLessThan(TOL)
      expect(c.result.switches.length).toBe(1)
    } finally {
      model.dispose()
    }
  })
})

// ---- longrope-research: three buckets, start tokens, per-layer factors, changing m --------------

describe("generation across longrope-research buckets", () => {
  const R0 = 16
  const set0 = factorsFrom(3, 1, 1.2)
  const set1 = factorsFrom(4, 1, 2.5)
  const set2 = [factorsFrom(5, 1, 4.5), factorsFrom(6, 1.1, 5)] // one row per layer
  const scaling = (layers: number) => ({
    rope_type: "longrope-research",
    original_max_position_embeddings: R0,
    mscale: "su",
    sets: [
      { max_length: 16, factors: set0 },
      { max_length: 32, factors: set1, start_tokens: 2 },
      { max_length: 64, factors: set2.slice(0, layers), start_tokens: 4 },
    ],
  })
  /** LongRoPE: m = sqrt(1 + ln s / ln L0) with s = max_length / L0 (1 when s ≤ 1). */
  const su = (s: number): number => (s <= 1 ? 1 : Math.sqrt(1 + Math.log(s) / Math.log(R0)))
  const ref = (layers: number) => (n: number): ExplicitRope => {
    if (n <= 16) return { invFreq: divided(set0), attentionFactor: su(1) }
    if (n <= 32) return { invFreq: divided(set1), attentionFactor: su(2), startTokens: 2 }
    return { invFreq: layers === 1 ? divided(set2[0]!) : set2.map(divided), attentionFactor: su(4), startTokens: 4 }
  }
  const prompt = randomTokens(10, 97, 11)

  test("rerotate, one layer, through 16 → 17 and 32 → 33 (n̂ 0 → 2 → 4, m 1 → 1.12 → 1.22) equals fresh prefills", async () => {
    const { rm, model } = await load(base({ ropeScaling: scaling(1), maxPositions: 64, layers: 1, seed: 31 }))
    try {
      const c = await check(model, rm, prompt, 30, "rerotate", (n) => n, ref(1), 4) // prefill in 4-token chunks
      report("research buckets, 1 layer", c, 30)
      expect(c.vsPrefill).toBeLessThan(TOL)
      expect(c.vsReference).toBeLessThan(TOL)
      expect(c.result.switches.map((s) => s.at)).toEqual([17, 33])
      expect(c.result.switches[1]!.to).toContain("n̂ 4")
    } finally {
      model.dispose()
    }
  })

  test("two layers with per-layer factors: rerotate equals the float64 decoder, reprefill fresh prefills", async () => {
    const { rm, model } = await load(base({ ropeScaling: scaling(2), maxPositions: 64, seed: 32 }))
    try {
      const c = await check(model, rm, prompt, 30, "rerotate", (n) => n, ref(2))
      report("research buckets, 2 layers, rerotate", c, 30)
      expect(c.vsReference).toBeLessThan(TOL)
      expect(c.result.switches.map((s) => s.at)).toEqual([17, 33])
      const re = await check(model, rm, prompt, 30, "reprefill", (n) => n, ref(2))
      report("research buckets, 2 layers, reprefill", re, 30)
      expect(re.vsPrefill).toBeLessThan(TOL)
      expect(re.vsReference).toBeLessThan(TOL)
    } finally {
      model.dispose()
    }
  })
})

describe("the session's re-rotation", () => {
  test("page by page (pages of 64 rows, and of 4 rounded up to the kernel's key tile) gives the bits of one page", async () => {
    const { model } = await load(base({ maxPositions: 256, originalMaxPositions: L0, ropeScaling: longropeScaling, seed: 61 }))
    try {
      const n = 150
      const tokens = randomTokens(n, 97, 17)
      const short = model.rope(30)
      const long = model.rope(40)
      const results: Float64Array[] = []
      // one page, then pages of 64 and of 4 rows (the cpu kernel's 4; the gpu kernel's tile, 64 at head_dim
      // 32): the re-rotation goes page by page, and attention carries its running softmax across pages
      for (const pageRows of [undefined, 64, 4]) {
        const s = model.session(n + 10, pageRows === undefined ? {} : { pageRows })
        await s.feed(tokens.slice(0, n - 1), short)
        s.rerotate(long)
        results.push(await s.feed(tokens.slice(n - 1), long))
        s.dispose()
      }
      // pages are whole key tiles of the kernel in use, so its sums run in one order: bit for bit
      for (const r of [results[1]!, results[2]!]) expect(maxAbsDiff(results[0]!, r)).toBe(0)
      // And rotating back restores the original keys (up to f32 rounding).
      const s = model.session(n)
      await s.feed(tokens.slice(0, n - 1), short)
      s.rerotate(long)
      s.rerotate(short)
      const back = await s.feed(tokens.slice(n - 1), short)
      s.dispose()
      expect(maxAbsDiff(back, await freshPrefill(model, tokens, short))).toBeLessThan(TOL)
    } finally {
      model.dispose()
    }
  })
})

// ---- dynamic NTK: a new table at every step past max_position_embeddings ------------------------

describe("generation with dynamic NTK", () => {
  test("rerotate at every step past max_position_embeddings (one layer) equals fresh prefills", async () => {
    const factor = 3
    const maxPos = 32
    const { rm, model } = await load(base({ ropeScaling: { rope_type: "dynamic", factor }, maxPositions: maxPos, layers: 1, seed: 41 }))
    try {
      // HF _compute_dynamic_ntk_parameters with seq_len = max(length, max_position_embeddings).
      const ref = (n: number): ExplicitRope => {
        const seqLen = Math.max(n, maxPos)
        return { invFreq: theta(BASE * ((factor * seqLen) / maxPos - (factor - 1)) ** (HD / (HD - 2))) }
      }
      const c = await check(model, rm, randomTokens(28, 97, 13), 10, "rerotate", (n) => n, ref)
      report("dynamic NTK", c, 10)
      expect(c.vsPrefill).toBeLessThan(TOL)
      expect(c.vsReference).toBeLessThan(TOL)
      expect(c.result.switches.map((s) => s.at)).toEqual([33, 34, 35, 36, 37])
    } finally {
      model.dispose()
    }
  })
})

// ---- the CLI --------------------------------------------------------------------------------------

describe("ropeway generate", () => {
  test("it is a subcommand of the CLI", () => {
    expect(commands.map((c) => c.name)).toContain("generate")
  })

  test("--tokens --json reports tokens, switches and policy; --text decodes with tokenizer.json", async () => {
    const dir = tempDir()
    dirs.push(dir)
    writeRandomModel(dir, base({ maxPositions: 128, originalMaxPositions: L0, ropeScaling: longropeScaling, vocab: 13, seed: 51 }))
    const prompt = randomTokens(30, 13, 3)
    const tokFile = join(dir, "prompt.json")
    writeFileSync(tokFile, JSON.stringify(prompt))
    const r = await runCli(["generate", "--model", dir, "--tokens", tokFile, "--max-new", "6", "--json"])
    expect(ownStderr(r.stderr)).toBe("")
    expect(r.code).toBe(0)
    const out = JSON.parse(r.stdout) as { tokens: number[]; switches: { at: number; from: string; to: string; reason: string }[]; policy: string; seconds: number; text?: string }
    expect(out.policy).toBe("reprefill") // the exact policy is the default
    expect(out.tokens.length).toBe(6)
    expect(out.switches.map((s) => s.at)).toEqual([33])
    expect(out.switches[0]!.reason).toContain("long_factor")
    expect(out.text).toBeUndefined()
    expect(out.seconds).toBeGreaterThan(0)

    // The same continuation in-process.
    const model = await loadLlama(await gpu(), dir)
    try {
      expect((await generate(model, prompt, { maxNew: 6 })).tokens).toEqual(out.tokens)
    } finally {
      model.dispose()
    }

    writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(TINY_TOKENIZER))
    const t = await runCli(["generate", "--model", dir, "--text", "hello world", "--max-new", "3", "--policy", "fixed", "--json"])
    expect(t.code).toBe(0)
    const tout = JSON.parse(t.stdout) as { tokens: number[]; text: string; policy: string; switches: unknown[] }
    expect(tout.policy).toBe("fixed")
    expect(tout.switches).toEqual([])
    expect(typeof tout.text).toBe("string")

    const bad = await runCli(["generate", "--model", dir, "--tokens", tokFile, "--max-new", "2", "--policy", "sometimes"])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain("--policy")
  })
})
