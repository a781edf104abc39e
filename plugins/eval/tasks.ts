/**
 * Multiple-choice tasks in an evaluation (multiple-choice.ts, lm-evaluation-harness's shape): task files
 * or the built-in passkey-choice, read before the model loads (a malformed file fails at once, naming its
 * line and field), then scored under the checkpoint's own RoPE ("model") with requests cut to the original
 * context L0, one item at a time, each checkpointed. One metrics.json row per task with acc, acc_norm and
 * acc_bytes and their Wilson intervals.
 */
import { Effect } from "effect"
import { attempt, type RopewayError } from "../../common/errors.ts"
import type { TextTokenizer } from "../data/tokenizer.ts"
import { type EvalContext, saved, sha } from "./context.ts"
import type { TaskEntry } from "./metrics.ts"
import { type ChoiceItem, type ChoiceResult, choiceContext, type PromptOptions, readTaskFiles, scoreChoiceItem, summarizeChoices } from "./multiple-choice.ts"
import type { TaskParams } from "./params.ts"
import { tableKey } from "./protocols.ts"
import { passkeyChoiceItems } from "./synthetic-choice.ts"

/** A task ready to score: its items, few-shot options and where they came from. */
export interface LoadedTask {
  readonly name: string
  readonly items: readonly ChoiceItem[]
  readonly prompt: PromptOptions
  readonly source: string
}

/** Reads a task's items (task files are read here: errors name the file, line and field). */
export function loadTask(t: TaskParams, tok: TextTokenizer, seed: number): LoadedTask {
  if (t.name === "passkey-choice" && !("files" in t)) {
    const s = t.seed ?? seed
    const shots = t.shots ?? 0
    const opts = { tokenizer: tok, seed: s, ...(t.length === undefined ? {} : { length: t.length }), ...(t.choices === undefined ? {} : { choices: t.choices }) }
    return {
      name: t.name,
      items: passkeyChoiceItems({ ...opts, count: t.items }),
      prompt: shots === 0 ? {} : { shots, pool: passkeyChoiceItems({ ...opts, count: Math.max(8, 2 * shots), split: "train" }) },
      source: `built-in passkey-choice: the §5.2 passkey prompt (< ${t.length ?? 300} tokens), ${t.choices ?? 4} keys to choose from, seed ${s}`,
    }
  }
  const f = t as Extract<TaskParams, { files: unknown }>
  const fewshot = f.fewshot === undefined ? {} : { shots: f.fewshot.shots, pool: readTaskFiles(f.fewshot.files) }
  return {
    name: f.name,
    items: readTaskFiles(f.files),
    prompt: { ...fewshot, ...(f.description === undefined ? {} : { description: f.description }) },
    source: `task files ${f.files.join(", ")}${f.fewshot === undefined ? "" : `; examples from ${f.fewshot.files.join(", ")}`}`,
  }
}

const SCORING =
  "lm-eval multiple_choice: ll = Σ ln p(\" \" + choice | context); acc = argmax ll, acc_norm = argmax ll / characters, acc_bytes = argmax ll / UTF-8 bytes; ties to the first choice"

/** Each task's items scored under the model's own RoPE, requests cut to L0 tokens. */
export function choiceTasks(e: EvalContext, tasks: readonly LoadedTask[]): Effect.Effect<TaskEntry[], RopewayError> {
  return Effect.gen(function* () {
    const rows: TaskEntry[] = []
    const maxLength = e.L0
    const opts = (t: LoadedTask) => ({ ...t.prompt, rope: (n: number) => e.model.rope(n), maxLength, ...(e.chunk === undefined ? {} : { chunk: e.chunk }) })
    const total = tasks.reduce((a, t) => a + t.items.length, 0)
    let done = 0
    for (const t of tasks) {
      const results: ChoiceResult[] = []
      for (const item of t.items) {
        const o = opts(t)
        // the checkpoint is named by what the scores depend on: the prompt, the choices, the tables used
        const context = yield* attempt(`${t.name}: ${item.id}`, () => choiceContext(item, o))
        const key = sha(JSON.stringify([context, item.choices, item.gold, item.id, maxLength, e.tok.name, tableKey(e.model.rope(maxLength))]))
        const r = yield* saved(e, `mc-${key}`, () => scoreChoiceItem(e.model, e.tok, item, o), `${t.name} item ${item.id}`)
        results.push(r)
        yield* e.progress.report(++done / total, `${t.name} ${results.length}/${t.items.length}`)
      }
      const s = yield* attempt(`${t.name}: intervals`, () => summarizeChoices(results, e.intervals.level))
      const rope = e.model.rope(maxLength)
      rows.push({
        task: t.name, method: "model", model: e.label, length: maxLength, acc: s.acc, acc_norm: s.acc_norm, acc_bytes: s.acc_bytes, items: s.items,
        shots: t.prompt.shots ?? 0, source: t.source, truncated: results.filter((r) => r.truncated > 0).length, scoring: SCORING,
        rope: `the model's own (at ${maxLength}: ${rope.method}: ${rope.reason})`,
      })
      const pct = (x: number) => `${(x * 100).toFixed(1)}%`
      yield* e.progress.log(`${t.name}: acc ${pct(s.acc.value)} [${pct(s.acc.lo)}, ${pct(s.acc.hi)}], acc_norm ${pct(s.acc_norm.value)} (n=${s.items})`)
    }
    return rows
  })
}
