/**
 * Evaluation protocols beyond perplexity, and the intervals every reported number carries:
 * - intervals.ts: Wilson intervals for accuracies, seeded percentile bootstrap (perplexity over documents
 *   or windows, means over trials); `Estimate`, the JSON shape metrics.json holds them in.
 * - retrieval.ts: RULER-shaped needle tasks (single, multikey, multivalue, multiquery) at depth × length,
 *   their prompts from a seed on built-in or user haystacks, and RULER's string_match_all scoring.
 * - multiple-choice.ts: lm-evaluation-harness-shaped multiple-choice tasks from JSONL task files, scored by
 *   the model's log-likelihoods (acc, acc_norm, acc_bytes), few-shot prompts, shards.
 * - synthetic-choice.ts: the built-in `passkey-choice` task, which needs no download.
 * Report pieces for estimates (interval cells, error bars, the depth × length heatmap): plugins/report/estimates.ts.
 */
export * from "./intervals.ts"
export * from "./retrieval.ts"
export * from "./multiple-choice.ts"
export * from "./synthetic-choice.ts"
