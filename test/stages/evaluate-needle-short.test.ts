// Needle-driven perplexity (LongRoPE2 §5.4) and short-context fidelity in `evaluate`, on the real tiny
// model: needle values against model.logprobs on the answer positions; KL 0 for plain RoPE against
// itself, > 0 for a scaled table, and equal to a float64 host computation; distributions() against the
// decoding path (session.feed) and logprobs.
import { afterAll, describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import type { RopeTable } from "../../kernels/rope-table.ts"
import { layerCollect, loadWorkflow, runWorkflow } from "../../cli/workflow.ts"
import { IGNORE_LABEL, needleSample } from "../../plugins/data/prompts.ts"
import { Rng } from "../../common/rng.ts"
import { syntheticDocument } from "../../plugins/data/synthetic.ts"
import { BYTE_BOS, byteTokenizer } from "../../plugins/data/tokenizer.ts"
import { loadLlama, type LlamaModel } from "../../plugins/models/llama/model.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { NEEDLE_STREAM, needleDepths } from "../../plugins/eval/needle.ts"
import { type Metrics, readMetrics } from "../../plugins/eval/metrics.ts"
import { gpu } from "../gpu-shared.ts"

const dir = mkdtempSync(join(tmpdir(), "ropeway-needle-short-"))
afterAll(() => removeTree(dir))

const SEED = 3
const WORKFLOW = `
name: needle-short
seed: ${SEED}
model: tiny
steps:
  evaluate:
    stage: evaluate
    inputs: { model: model }
    params:
      lengths: [256, 512]
      methods: [none, pi, yarn]
      samples: 2
      needle: { lengths: [512], depths: [0.25, 0.75] }
      short: {}
      originalLength: 256
`

let metrics: Metrics
let model: LlamaModel
const tok = byteTokenizer()
const docs = [0, 1].map((i) => syntheticDocument({ tokenizer: tok, seed: SEED, length: 512 }, i).ids)
const table = (scaling: Record<string, unknown> | undefined, L: number): RopeTable => resolveRope({ ...model.config.rope, originalMaxPositions: 256, scaling })(L)

const setup = (async () => {
  const rt = await gpu()
  const file = join(dir, "wf.yaml")
  writeFileSync(file, WORKFLOW)
  const r = await Effect.runPromise(
    Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
      Effect.provide(layerCollect([])),
      Effect.provideService(Gpu, rt),
    ),
  )
  expect(r.manifest.status).toBe("done")
  metrics = readMetrics(r.manifest.steps[1]!.outputs["metrics"]!.path)
  model = await loadLlama(rt, r.manifest.steps[0]!.outputs["model"]!.path)
})()
afterAll(() => model?.dispose())

/** Every row of a block of distributions() under one table, gathered (tiny case only: T × V floats). */
const allRows = async (tokens: number[], t: RopeTable, options: { chunk?: number; logitRows?: number } = {}): Promise<Float64Array[]> => {
  const V = model.config.vocabSize
  const rows: Float64Array[] = []
  await model.distributions(tokens, [t], (from, count, blocks) => {
    expect(from).toBe(rows.length)
    for (let j = 0; j < count; j++) rows.push(blocks[0]!.slice(j * V, (j + 1) * V))
  }, options)
  return rows
}

describe("needle-driven perplexity", () => {
  test("equals exp(mean over samples of the mean NLL on the answer labels), from model.logprobs", async () => {
    await setup
    const rows = metrics.perplexity.filter((e) => e.protocol === "needle")
    expect(rows.map((e) => e.method).sort()).toEqual(["none", "pi", "yarn"])
    const scalings: Record<string, Record<string, unknown> | undefined> = {
      none: undefined,
      pi: { rope_type: "linear", factor: 2 },
      yarn: { rope_type: "yarn", factor: 2, original_max_position_embeddings: 256 },
    }
    for (const e of rows) {
      expect(e.length).toBe(512)
      expect(e.windows).toBe(4)
      expect(e.tokens).toBe(4 * 7) // 7 digits, one byte each
      const t = table(scalings[e.method], 512)
      let mean = 0
      for (const [di, d] of docs.entries()) {
        for (const [j, depth] of needleDepths(di, [0.25, 0.75]).entries()) {
          const s = needleSample({ tokenizer: tok, document: d, seqLen: 512, rng: Rng.seeded(SEED, NEEDLE_STREAM, 512, di, j), depth })
          expect(s.ids.length).toBe(512)
          const lp = await model.logprobs(Array.from(s.ids), { rope: t })
          // HF shift: the label at position i is predicted by the logits at i − 1
          let sum = 0
          let n = 0
          for (let i = 1; i < 512; i++) if (s.labels[i] !== IGNORE_LABEL) (sum -= lp[i - 1]!, n++)
          expect(n).toBe(7)
          mean += sum / n / 4
        }
      }
      expect(e.value).toBeCloseTo(Math.exp(mean), 9)
    }
    // the default depths are LongRoPE2's (i + 10j)/99
    expect(needleDepths(3, undefined)).toEqual(Array.from({ length: 10 }, (_, j) => (3 + 10 * j) / 99))
  })
})

describe("short-context fidelity", () => {
  test("rows at L0; KL 0 for plain RoPE, > 0 for a scaled table; perplexity equals the truncate row", async () => {
    await setup
    expect(metrics.short.map((r) => r["method"])).toEqual(["none", "pi", "yarn"])
    for (const r of metrics.short) {
      expect(r["length"]).toBe(256)
      expect(r["baseline"]).toBe("none")
      expect(r["samples"]).toEqual(["synthetic(seed=3,tokens=512)#0", "synthetic(seed=3,tokens=512)#1"])
      expect(r["scale"]).toBe(2) // the baselines are set to the extension being judged (512 / 256)
    }
    const by = (m: string) => metrics.short.find((r) => r["method"] === m)! as { perplexity: number; kl: number }
    expect(by("none").kl).toBe(0)
    expect(by("pi").kl).toBeGreaterThan(1e-4)
    expect(by("yarn").kl).toBeGreaterThan(1e-4)
    // plain RoPE at L0 is the truncate row at 256 (host vs GPU log-softmax: f32-level agreement)
    const trunc = metrics.perplexity.find((e) => e.method === "none" && e.length === 256 && e.protocol === "truncate")!
    expect(Math.abs(by("none").perplexity / trunc.value - 1)).toBeLessThan(1e-5)
  })

  test("KL and perplexity equal a float64 host computation from each table's full distributions", async () => {
    await setup
    const base = table(undefined, 256)
    const pi = table({ rope_type: "linear", factor: 2 }, 256)
    let kl = 0
    let nllMean = 0
    for (const d of docs) {
      const tokens = [BYTE_BOS, ...d.slice(0, 255)]
      const p = await allRows(tokens, base)
      const q = await allRows(tokens, pi, { chunk: 100, logitRows: 37 }) // other blocking, same numbers
      expect(p.length).toBe(255)
      let s = 0
      let nll = 0
      for (let i = 0; i < 255; i++) {
        let row = 0
        for (let v = 0; v < p[i]!.length; v++) row += Math.exp(p[i]![v]!) * (p[i]![v]! - q[i]![v]!)
        s += row
        nll -= q[i]![tokens[i + 1]!]!
      }
      kl += s / 255 / docs.length
      nllMean += nll / 255 / docs.length
    }
    const r = metrics.short.find((x) => x["method"] === "pi")! as { perplexity: number; kl: number }
    expect(Math.abs(r.kl / kl - 1)).toBeLessThan(1e-6)
    expect(Math.abs(r.perplexity / Math.exp(nllMean) - 1)).toBeLessThan(1e-6)
  })

  test("distributions(): each row is the decoding path's full distribution; the target's entry is logprobs'", async () => {
    await setup
    const t = table({ rope_type: "linear", factor: 2 }, 300)
    const tokens = [BYTE_BOS, ...docs[0]!.slice(0, 299)]
    const rows = await allRows(tokens, t, { chunk: 64 })
    const lp = await model.logprobs(tokens, { rope: t })
    for (let i = 0; i < 299; i++) expect(Math.abs(rows[i]![tokens[i + 1]!]! - lp[i]!)).toBeLessThan(1e-4)
    for (const at of [0, 63, 64, 200, 298]) {
      const s = model.session(at + 1)
      try {
        const d = await s.feed(tokens.slice(0, at + 1), t)
        let worst = 0
        for (let v = 0; v < d.length; v++) worst = Math.max(worst, Math.abs(d[v]! - rows[at]![v]!))
        expect(worst).toBeLessThan(1e-4)
        // rows are normalised distributions
        expect(rows[at]!.reduce((a, x) => a + Math.exp(x), 0)).toBeCloseTo(1, 9)
      } finally {
        s.dispose()
      }
    }
  })
})
