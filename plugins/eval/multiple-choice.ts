/**
 * Multiple-choice tasks scored by log-likelihood, in lm-evaluation-harness's shape (its
 * `output_type: multiple_choice`), so ARC, HellaSwag, MMLU or TruthfulQA (mc1) exports can be brought as
 * task files:
 *
 *   task file   JSONL, one item a line: {"context": string, "choices": [string, ...], "gold": index}
 *               (other fields are ignored). Several files (shards) are read as one task, in order.
 *   prompt      [description] + k examples "context + delimiter + gold choice" + the item's context, joined
 *               by the few-shot delimiter ("\n\n"); the continuation is delimiter (" ") + choice.
 *   tokens      lm-eval's pair encoding: trailing whitespace of the context moves to the continuation;
 *               the continuation's ids are those of encode(context + continuation) past encode(context).
 *               BOS is put first when the tokenizer has one (lm-eval adds none for most HF models unless
 *               add_bos_token; models ropeway trains see BOS first). Longer than maxLength: the oldest
 *               context tokens are dropped (as lm-eval does), BOS kept.
 *   scores      ll_i = Σ ln p(continuation tokens | everything before); acc = [argmax ll_i = gold];
 *               acc_norm = [argmax ll_i / len(choice_i) = gold], len in characters (Unicode code points,
 *               lm-eval's Python len; the UTF-8 byte length for ASCII); acc_bytes divides by UTF-8 bytes.
 *               Ties go to the first choice (NumPy's argmax).
 *
 * Few-shot examples come from a separate pool (lm-eval's fewshot_split), drawn per item from a stream of
 * the seed keyed by the item's content, not its position: a task file split into shards gives exactly
 * the same prompts, log-likelihoods and results.
 *
 * Each (context, choice) is one forward pass of the model (`logprobs`), as lm-eval computes each request;
 * identical token sequences within an item run once.
 */
import { type } from "arktype"
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import type { RopeTable } from "../../kernels/rope-table.ts"
import { inputError } from "../../common/errors.ts"
import { Rng } from "../../common/rng.ts"
import { type TextTokenizer, withBos } from "../data/tokenizer.ts"
import { type Estimate, wilson } from "./intervals.ts"

export interface ChoiceItem {
  /** Where it came from (`file:line`, or a built-in task's name and index). */
  readonly id: string
  readonly context: string
  readonly choices: readonly string[]
  /** Index of the right choice. */
  readonly gold: number
}

// ---- task files ------------------------------------------------------------------------------------

const TaskLine = type({
  context: "string",
  // an empty choice has no length to normalise by
  choices: type("string > 0").array().atLeastLength(1),
  gold: "number.integer >= 0",
}).narrow((d, ctx) => d.gold < d.choices.length || ctx.reject({ path: ["gold"], expected: `less than ${d.choices.length}, the number of choices`, actual: String(d.gold) }))

/** One line of a task file; errors are one line naming the file, the line and the field. */
export function parseTaskLine(text: string, where: string): Omit<ChoiceItem, "id"> {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    throw inputError(where, `invalid JSON (${(e as Error).message})`)
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw inputError(where, 'expected a JSON object {"context": string, "choices": [string, ...], "gold": index}')
  const out = TaskLine(v)
  if (out instanceof type.errors) {
    const e = out[0]!
    throw inputError(where, `${e.propString}: ${e.problem}`)
  }
  return { context: out.context, choices: out.choices, gold: out.gold }
}

/** Every item of a JSONL task file (blank lines skipped). */
export function readTaskFile(path: string): ChoiceItem[] {
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch (e) {
    throw inputError(path, `cannot read the task file: ${(e as Error).message}`)
  }
  const items: ChoiceItem[] = []
  text.replace(/^\uFEFF/, "").split("\n").forEach((raw, i) => {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw
    if (line.trim() === "") return
    const where = `${path}:${i + 1}`
    items.push({ id: where, ...parseTaskLine(line, where) })
  })
  if (items.length === 0) throw inputError(path, "the task file has no items (expected JSONL lines {\"context\", \"choices\", \"gold\"})")
  return items
}

/** Shards of one task, in the order given. */
export const readTaskFiles = (paths: readonly string[]): ChoiceItem[] => paths.flatMap(readTaskFile)

// ---- prompts ---------------------------------------------------------------------------------------

export interface PromptOptions {
  /** Examples before each item (default 0). */
  readonly shots?: number
  /** Where examples come from (needed when shots > 0); an item identical to the one asked is never used. */
  readonly pool?: readonly ChoiceItem[]
  /** Seed of the example draws (default 1234, lm-eval's). */
  readonly seed?: number
  /** Between context and answer (default " ", lm-eval's target_delimiter). */
  readonly delimiter?: string
  /** Between examples (default "\n\n", lm-eval's fewshot_delimiter). */
  readonly fewshotDelimiter?: string
  /** Text before everything (lm-eval's description). */
  readonly description?: string
}

export const FEWSHOT_STREAM = 0xf5e7

/** A 48-bit number naming an item's content (context, choices, gold), for its own stream of the seed. */
const contentKey = (item: Omit<ChoiceItem, "id">): number =>
  Number.parseInt(createHash("sha256").update(JSON.stringify([item.context, item.choices, item.gold])).digest("hex").slice(0, 12), 16)

/** The few-shot examples of an item: `shots` distinct pool items, drawn by the item's content. */
export function fewshotExamples(item: ChoiceItem, opts: PromptOptions): ChoiceItem[] {
  const shots = opts.shots ?? 0
  if (!Number.isSafeInteger(shots) || shots < 0) throw new RangeError(`shots must be a non-negative integer, got ${shots}`)
  if (shots === 0) return []
  const pool = opts.pool ?? []
  const key = contentKey(item)
  const order = Rng.seeded(opts.seed ?? 1234, FEWSHOT_STREAM, key).permutation(pool.length)
  const picked: ChoiceItem[] = []
  for (const i of order) {
    const ex = pool[i]!
    if (contentKey(ex) !== key) picked.push(ex)
    if (picked.length === shots) return picked
  }
  throw new RangeError(`${shots}-shot prompts need ${shots} examples besides the item; the few-shot pool has ${picked.length} for ${item.id}`)
}

/** The context an item is scored after: description, examples with their answers, then the item's context. */
export function choiceContext(item: ChoiceItem, opts: PromptOptions = {}): string {
  const delimiter = opts.delimiter ?? " "
  const examples = fewshotExamples(item, opts).map((ex) => `${ex.context}${delimiter}${ex.choices[ex.gold]}`)
  const parts = [...(opts.description ? [opts.description] : []), ...examples, item.context]
  return parts.join(opts.fewshotDelimiter ?? "\n\n")
}

export interface ChoiceRequest {
  /** What the model sees: BOS (or EOS when the context is empty and there is no BOS), context, continuation. */
  readonly tokens: number[]
  /** Index of the continuation's first token in `tokens`. */
  readonly start: number
  /** Context tokens dropped from the left to fit maxLength. */
  readonly truncated: number
}

/** lm-eval's pair encoding of (context, continuation), cut to `maxLength` tokens from the left. */
export function encodeChoice(tok: TextTokenizer, context: string, continuation: string, maxLength = Number.POSITIVE_INFINITY): ChoiceRequest {
  const spaces = context.length - context.trimEnd().length
  const ctx = context.slice(0, context.length - spaces)
  const cont = context.slice(context.length - spaces) + continuation
  const ctxIds = tok.encode(ctx)
  const contIds = tok.encode(ctx + cont).slice(ctxIds.length)
  if (contIds.length === 0) throw new RangeError(`the continuation ${JSON.stringify(continuation)} encodes to no tokens`)
  let prefix = withBos(tok, [])
  if (prefix.length === 0 && ctxIds.length === 0) {
    // lm-eval scores an empty context after the end-of-text token
    if (tok.eos === undefined) throw new RangeError("an empty context needs a BOS or EOS token to condition on")
    prefix = [tok.eos]
  }
  const room = maxLength - prefix.length - contIds.length
  if (room < 0) throw new RangeError(`a continuation of ${contIds.length} tokens does not fit in ${maxLength} tokens`)
  const truncated = Math.max(0, ctxIds.length - room)
  const kept = ctxIds.slice(truncated)
  if (prefix.length + kept.length === 0) throw new RangeError("nothing to condition the continuation on")
  return { tokens: [...prefix, ...kept, ...contIds], start: prefix.length + kept.length, truncated }
}

// ---- scoring ---------------------------------------------------------------------------------------

/** What scoring needs of a model (LlamaModel and the evaluate stage's ScoringModel have it). */
export interface LogprobModel {
  /** `out[i] = ln p(tokens[i+1] | tokens[0..i])`. */
  logprobs(tokens: Uint32Array, options: { readonly rope: RopeTable; readonly chunk?: number }): Promise<Float64Array>
}

export interface ScoreOptions extends PromptOptions {
  /** The RoPE table for a sequence of n tokens (e.g. the model's own, or a baseline's at its scale). */
  readonly rope: (length: number) => RopeTable
  /** Tokens a request may have (default unlimited; usually the original context L0). */
  readonly maxLength?: number
  readonly chunk?: number
}

export interface ChoiceResult {
  readonly id: string
  readonly gold: number
  /** ll of each choice: Σ ln p over its continuation tokens. */
  readonly loglikelihoods: readonly number[]
  /** Continuation tokens per choice. */
  readonly tokens: readonly number[]
  /** argmax of ll, of ll / characters, of ll / UTF-8 bytes. */
  readonly pred: number
  readonly predNorm: number
  readonly predBytes: number
  /** Context tokens dropped to fit maxLength (the same for every choice unless choices differ in length). */
  readonly truncated: number
}

/** NumPy's argmax: the first index of the largest value. */
export const argmax = (xs: readonly number[]): number => xs.reduce((best, x, i) => (x > xs[best]! ? i : best), 0)

const chars = (s: string): number => [...s].length
const utf8 = new TextEncoder()

/** The result of an item from its choices' log-likelihoods (the arithmetic of acc, acc_norm, acc_bytes). */
export function choiceResult(item: ChoiceItem, loglikelihoods: readonly number[], tokens: readonly number[], truncated: number): ChoiceResult {
  return {
    id: item.id,
    gold: item.gold,
    loglikelihoods,
    tokens,
    pred: argmax(loglikelihoods),
    predNorm: argmax(loglikelihoods.map((ll, i) => ll / chars(item.choices[i]!))),
    predBytes: argmax(loglikelihoods.map((ll, i) => ll / utf8.encode(item.choices[i]!).length)),
    truncated,
  }
}

/** Scores one item: one forward pass per distinct (context, choice) sequence. */
export async function scoreChoiceItem(model: LogprobModel, tok: TextTokenizer, item: ChoiceItem, opts: ScoreOptions): Promise<ChoiceResult> {
  const context = choiceContext(item, opts)
  const delimiter = opts.delimiter ?? " "
  const requests = item.choices.map((c) => encodeChoice(tok, context, delimiter + c, opts.maxLength))
  const memo = new Map<string, number>()
  const lls: number[] = []
  for (const r of requests) {
    const key = r.tokens.join(",")
    let ll = memo.get(key)
    if (ll === undefined) {
      const lp = await model.logprobs(Uint32Array.from(r.tokens), { rope: opts.rope(r.tokens.length), ...(opts.chunk === undefined ? {} : { chunk: opts.chunk }) })
      ll = 0
      for (let t = r.start; t < r.tokens.length; t++) ll += lp[t - 1]!
      if (!Number.isFinite(ll)) throw new Error(`${item.id}: the log-likelihood of a choice is ${ll} (non-finite log-probs)`)
      memo.set(key, ll)
    }
    lls.push(ll)
  }
  return choiceResult(item, lls, requests.map((r) => r.tokens.length - r.start), Math.max(...requests.map((r) => r.truncated)))
}

/** Scores items in order; `onItem` sees each result as it comes (progress, checkpoints). */
export async function scoreChoiceItems(
  model: LogprobModel,
  tok: TextTokenizer,
  items: readonly ChoiceItem[],
  opts: ScoreOptions & { readonly onItem?: (result: ChoiceResult, done: number) => void | Promise<void> },
): Promise<ChoiceResult[]> {
  const out: ChoiceResult[] = []
  for (const item of items) {
    const r = await scoreChoiceItem(model, tok, item, opts)
    out.push(r)
    await opts.onItem?.(r, out.length)
  }
  return out
}

export interface ChoiceSummary {
  readonly items: number
  readonly acc: Estimate
  readonly acc_norm: Estimate
  readonly acc_bytes: Estimate
}

/** acc, acc_norm and acc_bytes with Wilson intervals over the items. */
export function summarizeChoices(results: readonly ChoiceResult[], level = 0.95): ChoiceSummary {
  const rate = (f: (r: ChoiceResult) => number): Estimate => wilson(results.filter((r) => f(r) === r.gold).length, results.length, { level, unit: "items" })
  return { items: results.length, acc: rate((r) => r.pred), acc_norm: rate((r) => r.predNorm), acc_bytes: rate((r) => r.predBytes) }
}
