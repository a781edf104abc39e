/**
 * Passkey retrieval (§5.2): the paper's prompt and filler (plugins/data passkeyPrompt, one seeded stream
 * per trial, shared by every method), greedy generation of maxNew tokens (generation.ts: baselines under
 * a fixed table, `model` re-prefilling by length), answer = the first integer; accuracy = correct /
 * trials per (method, length[, depth]) with its Wilson interval.
 */
import { Effect } from "effect"
import { attempt, type RopewayError } from "../../common/errors.ts"
import { Rng } from "../../common/rng.ts"
import { passkeyPrompt, type PasskeyPrompt } from "../data/prompts.ts"
import type { TextTokenizer } from "../data/tokenizer.ts"
import type { EvalContext } from "./context.ts"
import { type GenerationRun, generationRun } from "./generation.ts"
import { wilson } from "./intervals.ts"
import type { PasskeyEntry } from "./metrics.ts"
import type { Method } from "./protocols.ts"

/** The paper's answer: the first run of digits in the continuation (Python's re.search(r'\d+')), as a number. */
export const firstInteger = (text: string): number | undefined => {
  const m = /\d+/.exec(text)
  return m === null ? undefined : Number(m[0])
}

export const PASSKEY_STREAM = 0x9a55

/**
 * Trial `trial`'s passkey prompt at a target length: the §5.2 prompt from its own stream of the seed, so
 * every method (and every depth) sees the same pass keys, and one trial can be rebuilt alone.
 */
export const passkeyTrialPrompt = (tok: TextTokenizer, seed: number, length: number, trial: number, depth: number | undefined): PasskeyPrompt =>
  passkeyPrompt({ tokenizer: tok, targetTokens: length, rng: Rng.seeded(seed, PASSKEY_STREAM, length, trial), ...(depth === undefined ? {} : { depth }) })

/** How a row's prompts are made, for metrics.json. */
export const PASSKEY_PROMPTS = `passkeyPrompt (plugins/data/prompts.ts, longrope-method.md §5.2) with rng Rng.seeded(seed, ${PASSKEY_STREAM}, length, trial)`

export interface PasskeyRequest {
  readonly methods: readonly Method[]
  /** Sorted, distinct. */
  readonly lengths: readonly number[]
  readonly trials: number
  /** undefined: uniformly random per trial, as the paper. */
  readonly depths: ReadonlyArray<number | undefined>
  readonly maxNew: number
  readonly seed: number
}

/** One (method, length, depth) row: every trial's generation (checkpointed), its answer, the accuracy. */
function passkeyRow(e: EvalContext, r: PasskeyRequest, run: GenerationRun, progress: { done: number; readonly total: number }, method: Method, L: number, depth: number | undefined, prompts: readonly PasskeyPrompt[]) {
  return Effect.gen(function* () {
    const keys: number[] = []
    const answers: Array<number | null> = []
    let correct = 0
    let rope = ""
    for (const [t, prompt] of prompts.entries()) {
      const g = yield* run.generate(method, L, prompt.ids, r.maxNew, `passkey generation ${method}@${L} trial ${t}`)
      if (t === 0) rope = g.rope
      const answer = firstInteger(g.text)
      keys.push(prompt.key)
      answers.push(answer ?? null)
      if (answer === prompt.key) correct++
      yield* e.progress.report(++progress.done / progress.total, `passkey ${method}@${L} trial ${t + 1}/${r.trials}`)
    }
    const interval = wilson(correct, r.trials, { level: e.intervals.level })
    const row: PasskeyEntry = {
      method, model: e.label, length: L, accuracy: correct / r.trials, trials: r.trials, interval, ...(depth === undefined ? {} : { depth }), correct, seed: r.seed,
      prompts: PASSKEY_PROMPTS + (depth === undefined ? ", depth uniformly random" : `, depth ${depth}`), promptTokens: prompts.map((x) => x.ids.length),
      keys, answers, maxNew: r.maxNew, policy: method === "model" ? "reprefill" : "fixed", scale: L / e.L0, rope,
    }
    yield* e.progress.log(`${method.padEnd(5)} L=${String(L).padStart(6)} passkey${depth === undefined ? "" : ` depth ${depth}`} ${correct}/${r.trials} [${pctText(interval.lo)}, ${pctText(interval.hi)}]`)
    return row
  })
}

const pctText = (x: number): string => `${Math.round(x * 100)}%`

export function passkeyRetrieval(e: EvalContext, r: PasskeyRequest): Effect.Effect<PasskeyEntry[], RopewayError> {
  return Effect.gen(function* () {
    const run = yield* generationRun(e, "passkey")
    const progress = { done: 0, total: r.methods.length * r.lengths.length * r.depths.length * r.trials }
    const rows: PasskeyEntry[] = []
    for (const L of r.lengths) {
      for (const depth of r.depths) {
        const prompts = yield* attempt(`passkey prompts at ${L}`, () => Array.from({ length: r.trials }, (_, t) => passkeyTrialPrompt(e.tok, r.seed, L, t, depth)))
        for (const method of r.methods) rows.push(yield* passkeyRow(e, r, run, progress, method, L, depth, prompts))
      }
    }
    return rows
  })
}
