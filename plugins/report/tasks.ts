/**
 * The report's multiple-choice section (plugins/eval/multiple-choice.ts, lm-evaluation-harness's shape):
 * one table, a row per task and checkpoint, acc and acc_norm with their intervals.
 */
import { estimateText, intervalNote } from "./estimates.ts"
import { cell, code, table, type TaskRow, uniq } from "./markdown.ts"

export function tasksSection(rows: readonly TaskRow[]): string[] {
  if (rows.length === 0) return []
  const sources = uniq(rows.map((r) => `${code(r.task)}: ${String(r["source"] ?? "?")}`))
  return [
    "## Multiple-choice tasks",
    "",
    `Scored by log-likelihood as lm-evaluation-harness scores multiple_choice tasks, requests cut to ${uniq(rows.map((r) => r.length)).join(", ")} tokens (the original context): ` +
      "acc picks the choice with the highest log-likelihood, acc_norm divides it by the choice's characters.",
    "",
    table(
      ["task", "checkpoint", "RoPE", "acc", "acc_norm", "shots", "truncated"],
      rows.map((r) => [code(r.task), cell(r.model), cell(r.method), estimateText(r.acc, "accuracy"), estimateText(r.acc_norm, "accuracy"), String(r.shots), String(r["truncated"] ?? "–")]),
      ["l", "l", "l", "r", "r", "r", "r"],
    ),
    "",
    `${intervalNote(rows.flatMap((r) => [r.acc, r.acc_norm]))} Items: ${sources.join("; ")}.`,
    "",
  ]
}
