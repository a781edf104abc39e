/**
 * Retrieval tasks in RULER's shape (needle-in-a-haystack, Hsieh et al. 2024, its `niah_*` tasks):
 *
 *   single      one needle "One of the special magic numbers for K is: V." in the haystack; asked for K.
 *   multikey    the same, plus distractor needles for other keys with their own values (default 3).
 *   multivalue  one key with several values (default 4), each its own needle; every value must be given.
 *   multiquery  several keys (default 2), each with a value; asked for all of them at once.
 *
 * Keys are adjective-noun names (plugins/data randomKeyName), values 7-digit numbers, as RULER's default
 * words/numbers needles; the needle sentence, the instruction and the single-answer prompt are the
 * LongRoPE2 needle's (plugins/data prompts.ts), which is RULER's own wording. The prompt ends with RULER's
 * answer prefix ("The special magic number(s) for K mentioned in the provided text is/are:"), so base
 * models continue it. Haystacks: the paper's passkey filler ("paper", RULER's `repeat`), varied filler
 * sentences ("varied"), needles for other keys ("needles", RULER's `needle`), or a user's text file.
 *
 * Length: prompt (BOS included) + maxNew ≤ the target, as RULER sizes it, so everything generated stays
 * inside the length being measured. Depth: the needles asked about go at that share of the haystack, one
 * after another; the others (distractors) at random depths. Without a depth every needle is placed at
 * random, as RULER's own generator does.
 *
 * Scoring follows RULER's `string_match_all`: a trial's score is the share of expected values found in
 * the generated text; a trial is correct when all are found. A value counts only as a whole word (not
 * inside a longer number), which is stricter than RULER's substring test.
 */
import { readFileSync } from "node:fs"
import { inputError } from "../../common/errors.ts"
import { needleQuestion, needleSentence } from "../data/prompts.ts"
import { Rng } from "../../common/rng.ts"
import { type DocumentPlan, NEEDLE_INSTRUCTION, layOut } from "../data/synthetic.ts"
import { PAPER_GARBAGE, encodeContinuation, encodePieces, fillerStream, randomKeyName } from "../data/text.ts"
import { type TextTokenizer, withBos } from "../data/tokenizer.ts"
import { type BootstrapOptions, type Estimate, meanInterval, wilson } from "./intervals.ts"

export const RETRIEVAL_TASKS = ["single", "multikey", "multivalue", "multiquery"] as const
export type RetrievalTask = (typeof RETRIEVAL_TASKS)[number]

/** A haystack: built-in filler, or the sentences of a user's text file (see readHaystack). */
export type Haystack =
  | { readonly kind: "paper" | "varied" | "needles" }
  | { readonly kind: "text"; readonly name: string; readonly sentences: readonly string[] }

export interface RetrievalOptions {
  readonly tokenizer: TextTokenizer
  readonly task: RetrievalTask
  /** Prompt (BOS included) + maxNew tokens, at most. */
  readonly length: number
  /** Draws keys, values, the distractors' depths and varied filler. */
  readonly rng: Rng
  /** Share of the haystack before the needles asked about, in [0, 1]; absent: every needle at random. */
  readonly depth?: number
  /** Default "paper". */
  readonly haystack?: Haystack
  /** multikey: keys in the text, the asked one included (default 4). */
  readonly keys?: number
  /** multivalue: values of the one key (default 4). */
  readonly values?: number
  /** multiquery: keys asked at once (default 2). */
  readonly queries?: number
  /** Tokens to generate; default the answer's tokens + 4. */
  readonly maxNew?: number
}

export interface RetrievalPrompt {
  readonly task: RetrievalTask
  readonly text: string
  /** Token ids with BOS; ids.length + maxNew ≤ length. */
  readonly ids: number[]
  readonly maxNew: number
  /** The keys asked about, and every value the answer must contain. */
  readonly asked: readonly string[]
  readonly expected: readonly string[]
  /** Needles in the text (expected ones and distractors). */
  readonly needles: number
  /** Requested depth (undefined: random). */
  readonly depth: number | undefined
  /** Where each expected needle starts, as a share of the prompt's tokens. */
  readonly needleDepths: readonly number[]
}

const PLURAL_INSTRUCTION = NEEDLE_INSTRUCTION.replace("A special magic number is", "Some special magic numbers are").replace("the number afterwards", "the numbers afterwards")

/** "a", "a and b", "a, b, and c". */
const listed = (xs: readonly string[]): string =>
  xs.length <= 2 ? xs.join(" and ") : `${xs.slice(0, -1).join(", ")}, and ${xs[xs.length - 1]}`

const count = (v: number | undefined, fallback: number, name: string, min: number): number => {
  const n = v ?? fallback
  if (!Number.isSafeInteger(n) || n < min || n > 64) throw new RangeError(`retrieval: ${name} must be an integer in ${min}..64, got ${n}`)
  return n
}

interface Needle {
  readonly key: string
  readonly value: string
  readonly asked: boolean
}

/** The needles of a task: keys distinct, values distinct 7-digit numbers. */
const drawNeedles = (rng: Rng, opts: RetrievalOptions): Needle[] => {
  const keys = new Set<string>()
  const values = new Set<string>()
  const key = (): string => {
    for (;;) {
      const k = randomKeyName(rng)
      if (!keys.has(k)) return (keys.add(k), k)
    }
  }
  const value = (): string => {
    for (;;) {
      const v = String(rng.int(1_000_000, 9_999_999))
      if (!values.has(v)) return (values.add(v), v)
    }
  }
  switch (opts.task) {
    case "single":
      return [{ key: key(), value: value(), asked: true }]
    case "multikey": {
      const n = count(opts.keys, 4, "keys", 2)
      return Array.from({ length: n }, (_, i) => ({ key: key(), value: value(), asked: i === 0 }))
    }
    case "multivalue": {
      const k = key()
      return Array.from({ length: count(opts.values, 4, "values", 2) }, () => ({ key: k, value: value(), asked: true }))
    }
    case "multiquery":
      return Array.from({ length: count(opts.queries, 2, "queries", 2) }, () => ({ key: key(), value: value(), asked: true }))
  }
}

/** A stream of haystack sentences; `used` keys are never drawn for "needles" filler. */
const haystackStream = (h: Haystack, rng: Rng, used: ReadonlySet<string>): (() => () => string) => {
  switch (h.kind) {
    case "paper":
      return () => fillerStream("paper", rng)
    case "varied":
      return () => fillerStream("varied", rng)
    case "needles":
      return () => () => {
        let k = randomKeyName(rng)
        while (used.has(k)) k = randomKeyName(rng)
        return needleSentence(k, String(rng.int(1_000_000, 9_999_999)))
      }
    case "text": {
      // one reading of the text through every gap (it does not restart after a needle), cycling if short
      let i = 0
      const next = (): string => h.sentences[i++ % h.sentences.length]!
      return () => next
    }
  }
}

/** One RULER-shaped retrieval prompt. */
export function retrievalPrompt(opts: RetrievalOptions): RetrievalPrompt {
  const { tokenizer: tok, rng, depth } = opts
  if (depth !== undefined && !(depth >= 0 && depth <= 1)) throw new RangeError(`retrieval depth must be in [0, 1], got ${depth}`)
  const needles = drawNeedles(rng, opts)
  // drawn whether or not a depth is given, so a depth grid shares keys, values and distractor places
  const randomDepths = needles.map(() => rng.float())
  const asked = [...new Set(needles.filter((n) => n.asked).map((n) => n.key))]
  const expected = needles.filter((n) => n.asked).map((n) => n.value)
  const single = expected.length === 1
  const tail = single
    ? `\n${needleQuestion(asked[0]!)}`
    : `\nThe special magic numbers for ${listed(asked)} mentioned in the provided text are:`
  const haystack = opts.haystack ?? { kind: "paper" }
  // a needle is a line of its own; in a haystack of needles it must look exactly like the others
  const line = (n: Needle): string => (haystack.kind === "needles" ? "" : "\n") + needleSentence(n.key, n.value)
  const plan: DocumentPlan = {
    head: [{ text: single ? NEEDLE_INSTRUCTION : PLURAL_INSTRUCTION }],
    inserts: needles.map((n, i) => ({ depth: n.asked && depth !== undefined ? depth : randomDepths[i]!, pieces: [{ text: line(n) }] })),
    tail: [{ text: tail }],
  }
  const answerTokens = encodeContinuation(tok, ` ${expected.join(", ")}.`).length
  const maxNew = opts.maxNew ?? answerTokens + 4
  if (!Number.isSafeInteger(maxNew) || maxNew < 1) throw new RangeError(`retrieval: maxNew must be a positive integer, got ${maxNew}`)
  const bos = withBos(tok, []).length
  const body = opts.length - bos - maxNew
  const fixed = [plan.head, plan.tail, ...plan.inserts.map((x) => x.pieces)].reduce((a, p, k) => a + encodePieces(tok, p, k === 0).ids.length, 0)
  if (fixed > body) {
    throw new RangeError(`${opts.task} retrieval at length ${opts.length}: the instruction, ${needles.length} needle(s), the question and ${maxNew} generated tokens need ${fixed + bos + maxNew} tokens`)
  }
  const doc = layOut(tok, plan, body, haystackStream(haystack, rng, new Set(needles.map((n) => n.key))), `${opts.task} retrieval`)
  const ids = withBos(tok, doc.ids)
  // layOut reports depths in its (stable) depth order; map them back to the needles
  const order = plan.inserts.map((x, i) => ({ d: x.depth, i })).sort((a, b) => a.d - b.d).map((x) => x.i)
  const at = new Array<number>(needles.length)
  order.forEach((needle, k) => (at[needle] = (doc.depths[k]! * body + bos) / ids.length))
  return {
    task: opts.task,
    text: doc.text,
    ids,
    maxNew,
    asked,
    expected,
    needles: needles.length,
    depth,
    needleDepths: needles.flatMap((n, i) => (n.asked ? [at[i]!] : [])),
  }
}

/** Stream of the trial prompts under a seed (independent of the passkey's and needle's). */
export const RETRIEVAL_STREAM = 0x5e7e

/**
 * Trial `trial` of a task at a length: its own stream of the seed, so every method and every depth sees
 * the same keys and values, and one trial can be rebuilt alone.
 */
export const retrievalTrial = (opts: Omit<RetrievalOptions, "rng"> & { readonly seed: number; readonly trial: number }): RetrievalPrompt => {
  const { seed, trial, ...rest } = opts
  return retrievalPrompt({ ...rest, rng: Rng.seeded(seed, RETRIEVAL_STREAM, RETRIEVAL_TASKS.indexOf(opts.task), opts.length, trial) })
}

/**
 * A user's haystack: the text file's sentences (whitespace collapsed, split after . ! ?), read in order
 * and repeated if the prompt is longer than the file.
 */
export function readHaystack(path: string): Haystack {
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch (e) {
    throw inputError(path, `cannot read the haystack text: ${(e as Error).message}`)
  }
  const sentences = text.replace(/\s+/g, " ").trim().split(/(?<=[.!?]) /).filter((s) => s !== "")
  if (sentences.length === 0) throw inputError(path, "the haystack text file is empty (expected plain text to hide the needles in)")
  return { kind: "text", name: path, sentences }
}

/** The haystack's name for metrics.json. */
export const haystackName = (h: Haystack): string =>
  h.kind === "text" ? `text file ${h.name}` : h.kind === "paper" ? `the passkey filler ("${PAPER_GARBAGE}" repeated)` : h.kind === "varied" ? "varied filler sentences" : "needles for other keys"

// ---- scoring -------------------------------------------------------------------------------------

export interface RetrievalScore {
  /** Per expected value: whether the generated text contains it as a whole word. */
  readonly found: readonly boolean[]
  /** Share found (RULER's per-sample string_match_all). */
  readonly score: number
  /** All found. */
  readonly correct: boolean
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** Whether `value` occurs in `text` not inside a longer word or number (case-insensitive). */
export const containsWord = (text: string, value: string): boolean =>
  new RegExp(`(?<![\\p{L}\\p{N}])${escape(value)}(?![\\p{L}\\p{N}])`, "iu").test(text)

export function scoreRetrieval(expected: readonly string[], generated: string): RetrievalScore {
  if (expected.length === 0) throw new RangeError("retrieval: nothing expected")
  const found = expected.map((v) => containsWord(generated, v))
  const k = found.filter((f) => f).length
  return { found, score: k / expected.length, correct: k === expected.length }
}

export interface RetrievalSummary {
  /** Trials with every value found, with a Wilson interval. */
  readonly accuracy: Estimate
  /** Mean share of values found (RULER's reported score), with a bootstrap interval over trials. */
  readonly partial: Estimate
}

export function summarizeRetrieval(scores: readonly RetrievalScore[], opts: Omit<BootstrapOptions, "unit"> = {}): RetrievalSummary {
  const level = opts.level ?? 0.95
  return {
    accuracy: wilson(scores.filter((s) => s.correct).length, scores.length, { level }),
    partial: meanInterval(scores.map((s) => s.score), { ...opts, unit: "trials", level }),
  }
}
