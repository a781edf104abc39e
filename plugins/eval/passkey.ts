/**
 * Passkey retrieval (§5.2): the paper's prompt and filler (plugins/data passkeyPrompt, one seeded stream
 * per trial, shared by every method), greedy `generate` of maxNew tokens, answer = the first integer;
 * accuracy = correct / trials per (method, length[, depth]). Baselines generate under one table, their
 * scale-L/L0 table resolved for prompt + maxNew (policy "fixed"); `model` under its own method by sequence
 * length, re-prefilling when the table changes ("reprefill", what HF's cache-less generation in the paper's
 * script computes).
 */
import { Effect } from "effect"
import { attempt, fail, type RopewayError } from "../../common/errors.ts"
import { Rng } from "../../common/rng.ts"
import { passkeyPrompt, type PasskeyPrompt } from "../data/prompts.ts"
import type { TextTokenizer } from "../data/tokenizer.ts"
import { asGenerator, generate, type GenerateOptions, type Generator } from "../models/generate.ts"
import { type EvalContext, saved, sha, tableAt } from "./context.ts"
import type { PasskeyEntry } from "./metrics.ts"
import { type Method, tableKey } from "./protocols.ts"

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

/** Shared by the trials of a run: the generator, stop tokens, decoding, generations already made. */
interface Run {
  readonly e: EvalContext
  readonly r: PasskeyRequest
  readonly gen: Generator
  readonly stop: readonly number[]
  /** Generations by (table or table sequence, prompt): equal tables give equal tokens. */
  readonly memo: Map<string, number[]>
  done: number
  readonly total: number
}

/** How one trial generates: the table (or the model's own, per length), its cache id and what the row says of it. */
function trialOptions(run: Run, method: Method, L: number, prompt: PasskeyPrompt) {
  return Effect.gen(function* () {
    const { e, r, stop } = run
    const n = prompt.ids.length + r.maxNew
    const chunk = e.chunk === undefined ? {} : { chunk: e.chunk }
    if (method === "model") {
      const seen = new Set<string>()
      for (let k = prompt.ids.length; k <= n; k++) seen.add(tableKey(e.model.rope(k)))
      const first = e.model.rope(prompt.ids.length)
      return {
        key: seen.size === 1 ? [...seen][0]! : `model:${[...seen].join(",")}`,
        opts: { maxNew: r.maxNew, policy: "reprefill", stop, ...chunk } satisfies GenerateOptions,
        rope: `the model's own, by sequence length (at ${prompt.ids.length}: ${first.method}: ${first.reason})`,
      }
    }
    const table = yield* tableAt(e, method, L, n)
    return { key: tableKey(table), opts: { maxNew: r.maxNew, policy: "fixed", stop, rope: () => table, ...chunk } satisfies GenerateOptions, rope: `${table.method}: ${table.reason}` }
  })
}

/** One (method, length, depth) row: every trial's generation (checkpointed), its answer, the accuracy. */
function passkeyRow(run: Run, method: Method, L: number, depth: number | undefined, prompts: readonly PasskeyPrompt[]) {
  return Effect.gen(function* () {
    const { e, r } = run
    const text = (ids: readonly number[]): string => e.tok.decode(ids.filter((t) => t < e.tok.vocabSize && t !== e.tok.bos && t !== e.tok.eos))
    const keys: number[] = []
    const answers: Array<number | null> = []
    let correct = 0
    let rope = ""
    for (const [t, prompt] of prompts.entries()) {
      const how = yield* trialOptions(run, method, L, prompt)
      if (t === 0) rope = how.rope
      const id = `${how.key}:${L}:${depth ?? "random"}:${t}`
      let tokens = run.memo.get(id)
      if (tokens === undefined) {
        tokens = yield* saved(e, `passkey-${sha(`${id}:${r.seed}:${r.maxNew}:${e.tok.name}`)}`, async () => (await generate(run.gen, prompt.ids, how.opts)).tokens, `passkey generation ${method}@${L} trial ${t}`)
        run.memo.set(id, tokens)
      }
      const answer = firstInteger(text(tokens))
      keys.push(prompt.key)
      answers.push(answer ?? null)
      if (answer === prompt.key) correct++
      yield* e.progress.report(++run.done / run.total, `passkey ${method}@${L} trial ${t + 1}/${r.trials}`)
    }
    const row: PasskeyEntry = {
      method, model: e.label, length: L, accuracy: correct / r.trials, trials: r.trials, ...(depth === undefined ? {} : { depth }), correct, seed: r.seed,
      prompts: PASSKEY_PROMPTS + (depth === undefined ? ", depth uniformly random" : `, depth ${depth}`), promptTokens: prompts.map((x) => x.ids.length),
      keys, answers, maxNew: r.maxNew, policy: method === "model" ? "reprefill" : "fixed", scale: L / e.L0, rope,
    }
    yield* e.progress.log(`${method.padEnd(5)} L=${String(L).padStart(6)} passkey${depth === undefined ? "" : ` depth ${depth}`} ${correct}/${r.trials}`)
    return row
  })
}

export function passkeyRetrieval(e: EvalContext, r: PasskeyRequest): Effect.Effect<PasskeyEntry[], RopewayError> {
  return Effect.gen(function* () {
    const gen = asGenerator(e.model)
    if (gen === undefined) return yield* fail("passkey: the model has no incremental decoding (session) to generate with")
    const run: Run = {
      e, r, gen, stop: e.tok.eos === undefined ? [] : [e.tok.eos], memo: new Map(), done: 0, total: r.methods.length * r.lengths.length * r.depths.length * r.trials,
    }
    const rows: PasskeyEntry[] = []
    for (const L of r.lengths) {
      for (const depth of r.depths) {
        const prompts = yield* attempt(`passkey prompts at ${L}`, () => Array.from({ length: r.trials }, (_, t) => passkeyTrialPrompt(e.tok, r.seed, L, t, depth)))
        for (const method of r.methods) rows.push(yield* passkeyRow(run, method, L, depth, prompts))
      }
    }
    return rows
  })
}
