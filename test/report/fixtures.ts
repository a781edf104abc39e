// Small fixture data for the report tests: a metrics.json, a ropeway search log, a factor-set file.
import { perplexityInterval, wilson } from "../../plugins/eval/intervals.ts"
import { summarizeRetrieval } from "../../plugins/eval/retrieval.ts"
import { yarnInitFactors } from "../../plugins/rope/factors.ts"

const ppl = (method: string, length: number, value: number, protocol = "truncate") => ({
  method,
  model: "base",
  length,
  value,
  protocol,
  samples: ["synthetic(seed=7)#0", "synthetic(seed=7)#1", "synthetic(seed=7)#2"],
  bos: "BOS prepended to the window; the document's first L−1 tokens",
  aggregation: "exp(mean over documents of the window's mean NLL)",
  windows: 3,
  tokens: 3 * (length - 1),
  scale: length / 256,
  rope: method === "model" ? `longrope: length ${length}` : method,
  data: "synthetic(seed=7), 3 documents of 2048 tokens",
})

export const PPL: Record<string, Record<number, number>> = {
  model: { 256: 12.3456, 512: 12.9, 1024: 13.4, 2048: 14.75 },
  none: { 256: 12.3456, 512: 40.2, 1024: 310.5, 2048: 1802.25 },
  pi: { 256: 12.3456, 512: 14.1, 1024: 16.8, 2048: 21.05 },
  yarn: { 256: 12.3456, 512: 13.2, 1024: 14.3, 2048: 16.125 },
}

export const metricsFixture = {
  perplexity: [
    ...Object.entries(PPL).flatMap(([m, byL]) => Object.entries(byL).map(([L, v]) => ppl(m, Number(L), v))),
    ...[256, 2048].map((L) => ({ ...ppl("model", L, L === 256 ? 11.5 : 13.9, "sliding"), stride: 128, aggregation: "exp(mean over all windows of the window's mean NLL)" })),
  ],
  passkey: ["model", "pi"].flatMap((method) =>
    [256, 1024, 2048].flatMap((length) =>
      [0, 0.5, 1].map((depth) => ({ method, model: "base", length, depth, accuracy: method === "model" ? 1 - (length / 2048) * depth * 0.3 : length <= 256 ? 1 : 0.1 * (1 + depth), trials: 10 })),
    ),
  ),
  short: [
    { method: "model", model: "base", length: 256, perplexity: 12.3456, base_perplexity: 12.3456, kl: 0 },
    { method: "model", model: "finetune", length: 256, perplexity: 12.61, base_perplexity: 12.3456, kl: 0.0123 },
  ],
  search: [{ step: "search", method: "longrope", length: 2048, best: 13.87, evaluations: 48 }],
}

export const searchLogFixture = {
  format: "ropeway-search-log",
  version: 1,
  strategy: "evolutionary",
  entries: [0, 1, 2, 3].map((g) => ({
    generation: g,
    evaluations: 12 * (g + 1),
    fullEvaluations: 12 * (g + 1),
    seconds: 10.5 * (g + 1),
    best: { genome: { factors: [1, 1.5, 2, 4], startToken: 4 }, fitness: 20 - 2 * g },
    population: [0, 1, 2, 3, 4].map((k) => ({ genome: { factors: [1, 1, 2, 3] }, fitness: k === 4 ? Number.MAX_VALUE : 20 - 2 * g + k * (4 - g) })),
  })),
}

export const geometry = { rotaryDim: 32, base: 10000, originalLength: 256 }

export const factorSetFixture = {
  format: "ropeway-factor-set",
  version: 1,
  model: { rotary_dim: 32, base: 10000, original_max_position_embeddings: 256 },
  mscale: "su",
  sets: [
    { max_length: 256, factors: Array.from({ length: 16 }, (_, i) => 1 + i * 0.02) },
    { max_length: 2048, scale: 8, factors: Array.from(yarnInitFactors(geometry, 8), (x, i) => x * (1 + 0.05 * Math.sin(i))) },
  ],
  provenance: { method: "search", run_id: "run-123", lengths: [2048], scale: 8, created: "2026-11-28T00:00:00Z" },
}

/**
 * A metrics.json as the evaluate stage writes it now: every number with its interval (made by the real
 * interval functions from made-up per-document NLLs and trial outcomes), retrieval rows on a depth ×
 * length grid, multiple-choice rows, for two checkpoints.
 */
export function intervalMetricsFixture() {
  const lengths = [512, 1024, 2048, 4096]
  const docs = 4
  const ppl = (model: string, method: string, length: number, base: number) => {
    const windows = Array.from({ length: docs }, (_, d) => ({ doc: d, sum: (length - 1) * Math.log(base * (1 + 0.08 * (d - 1.5))), count: length - 1 }))
    const interval = perplexityInterval(windows, "window-mean", { seed: 3, replicates: 400 })
    return {
      method, model, length, value: interval.value, interval, protocol: "truncate", samples: Array.from({ length: docs }, (_, d) => `synthetic(seed=3)#${d}`),
      bos: "BOS prepended", aggregation: "exp(mean over documents of the window's mean NLL)", windows: docs, tokens: docs * (length - 1), scale: length / 512, rope: method, data: "synthetic(seed=3)",
      nll: windows.map((w) => ({ doc: `synthetic(seed=3)#${w.doc}`, sum: w.sum, count: w.count })),
    }
  }
  const curve: Record<string, (L: number) => number> = {
    "longrope-ft": (L) => 2.1 + 0.05 * Math.log2(L / 512),
    "pi-ft": (L) => 2.3 + 0.25 * Math.log2(L / 512),
    "yarn-ft": (L) => 2.2 + 0.12 * Math.log2(L / 512),
  }
  const perplexity = Object.entries(curve).flatMap(([model, f]) => lengths.map((L) => ppl(model, "model", L, f(L))))
  const passkey = Object.keys(curve).flatMap((model, k) =>
    [512, 4096].map((length) => {
      const correct = length === 512 ? 50 : 48 - 9 * k
      return { method: "model", model, length, accuracy: correct / 50, trials: 50, correct, interval: wilson(correct, 50) }
    }),
  )
  const retrieval = ["single", "multikey"].flatMap((task) =>
    ["model", "yarn"].flatMap((method) =>
      [1024, 2048, 4096].flatMap((length) =>
        [0, 0.5, 1].map((depth) => {
          const p = method === "model" ? 0.95 - (task === "multikey" ? 0.2 : 0) * depth : Math.max(0, 1 - (length / 4096) * (0.4 + depth * 0.5))
          const scores = Array.from({ length: 10 }, (_, t) => ({ found: [], score: t < Math.round(p * 10) ? 1 : 0.5 * (t % 2), correct: t < Math.round(p * 10) }))
          const { accuracy, partial } = summarizeRetrieval(scores, { seed: 3, replicates: 400 })
          return {
            task, method, model: "longrope-ft", length, depth, accuracy, partial, trials: 10, seed: 3, haystack: "the passkey filler", prompts: "retrievalTrial", promptTokens: [], expected: [], generated: [],
            maxNew: 12, policy: method === "model" ? "reprefill" : "fixed", scale: length / 512, rope: method,
          }
        }),
      ),
    ),
  )
  const tasks = ["base", "longrope-ft"].map((model, k) => ({
    task: "passkey-choice", method: "model", model, length: 512, acc: wilson(70 + 8 * k, 100, { unit: "items" }), acc_norm: wilson(66 + 9 * k, 100, { unit: "items" }),
    acc_bytes: wilson(66 + 9 * k, 100, { unit: "items" }), items: 100, shots: 0, source: "built-in passkey-choice, seed 3", truncated: 0, scoring: "lm-eval", rope: "plain",
  }))
  return { perplexity, passkey, retrieval, tasks, short: [], search: [] }
}
