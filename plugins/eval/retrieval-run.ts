/**
 * The RULER-shaped retrieval tasks (retrieval.ts) in an evaluation: for every task, length and depth, the
 * same `trials` prompts for every method (one seeded stream per trial), greedy generation as passkey's
 * (generation.ts), RULER's string_match_all scoring; one metrics.json row per (task, method, length,
 * depth) with the all-found accuracy (Wilson interval) and the mean share found (bootstrap over trials).
 */
import { Effect } from "effect"
import { attempt, type RopewayError } from "../../common/errors.ts"
import type { EvalContext } from "./context.ts"
import { generationRun } from "./generation.ts"
import type { RetrievalEntry } from "./metrics.ts"
import type { Method } from "./protocols.ts"
import { type Haystack, haystackName, RETRIEVAL_STREAM, RETRIEVAL_TASKS, type RetrievalPrompt, type RetrievalScore, type RetrievalTask, retrievalTrial, scoreRetrieval, summarizeRetrieval } from "./retrieval.ts"

export interface RetrievalRequest {
  readonly methods: readonly Method[]
  readonly tasks: readonly RetrievalTask[]
  /** Sorted, distinct. */
  readonly lengths: readonly number[]
  /** undefined: every needle at random. */
  readonly depths: ReadonlyArray<number | undefined>
  readonly trials: number
  readonly haystack: Haystack
  readonly keys: number | undefined
  readonly values: number | undefined
  readonly queries: number | undefined
  readonly maxNew: number | undefined
  readonly seed: number
}

const prompts = (e: EvalContext, r: RetrievalRequest, task: RetrievalTask, L: number, depth: number | undefined): Effect.Effect<RetrievalPrompt[], RopewayError> =>
  attempt(`${task} retrieval prompts at ${L}`, () =>
    Array.from({ length: r.trials }, (_, trial) =>
      retrievalTrial({
        tokenizer: e.tok, task, length: L, haystack: r.haystack, seed: r.seed, trial,
        ...(depth === undefined ? {} : { depth }),
        ...(r.keys === undefined ? {} : { keys: r.keys }),
        ...(r.values === undefined ? {} : { values: r.values }),
        ...(r.queries === undefined ? {} : { queries: r.queries }),
        ...(r.maxNew === undefined ? {} : { maxNew: r.maxNew }),
      }),
    ))

export function retrievalEvaluation(e: EvalContext, r: RetrievalRequest): Effect.Effect<RetrievalEntry[], RopewayError> {
  return Effect.gen(function* () {
    const run = yield* generationRun(e, "retrieval")
    const total = r.tasks.length * r.lengths.length * r.depths.length * r.methods.length * r.trials
    let done = 0
    const rows: RetrievalEntry[] = []
    const { level, replicates, seed } = e.intervals
    for (const task of r.tasks) {
      for (const L of r.lengths) {
        for (const depth of r.depths) {
          const ps = yield* prompts(e, r, task, L, depth)
          for (const method of r.methods) {
            const generated: string[] = []
            const scores: RetrievalScore[] = []
            let how = { policy: "", rope: "" }
            for (const [t, p] of ps.entries()) {
              const g = yield* run.generate(method, L, p.ids, p.maxNew, `${task} retrieval ${method}@${L} trial ${t}`)
              if (t === 0) how = g
              generated.push(g.text)
              scores.push(scoreRetrieval(p.expected, g.text))
              yield* e.progress.report(++done / total, `${task} ${method}@${L}${depth === undefined ? "" : ` depth ${depth}`} trial ${t + 1}/${r.trials}`)
            }
            const { accuracy, partial } = yield* attempt(`${task} retrieval intervals`, () => summarizeRetrieval(scores, { level, replicates, seed }))
            rows.push({
              task, method, model: e.label, length: L, ...(depth === undefined ? {} : { depth }), accuracy, partial, trials: r.trials, seed: r.seed,
              haystack: haystackName(r.haystack),
              prompts: `retrievalTrial (plugins/eval/retrieval.ts, RULER niah_${task}) with rng Rng.seeded(seed, ${RETRIEVAL_STREAM}, ${RETRIEVAL_TASKS.indexOf(task)}, length, trial)` +
                (depth === undefined ? ", needles at random depths" : `, the asked needles at depth ${depth}`),
              promptTokens: ps.map((p) => p.ids.length),
              expected: ps.map((p) => [...p.expected]),
              generated,
              maxNew: Math.max(...ps.map((p) => p.maxNew)),
              policy: how.policy,
              scale: L / e.L0,
              rope: how.rope,
            })
            const k = scores.filter((s) => s.correct).length
            yield* e.progress.log(`${method.padEnd(5)} L=${String(L).padStart(6)} ${task}${depth === undefined ? "" : ` depth ${depth}`} ${k}/${r.trials} all found, partial ${partial.value.toFixed(2)}`)
          }
        }
      }
    }
    return rows
  })
}
