// Small fixture data for the report tests: a metrics.json, a ropeway search log, a factor-set file.
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
