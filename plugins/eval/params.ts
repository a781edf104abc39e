/**
 * The nested params of the `evaluate` stage (its `data`, `passkey`, `needle`, `short`, `intervals`,
 * `retrieval` and `tasks`), as Effect Schemas: the workflow loader checks them with positions, `ropeway
 * list` shows their descriptions.
 */
import { Schema } from "effect"
import { doc, Fraction, PosInt, withDefault } from "../../common/schema.ts"
import { WILSON_LEVELS } from "./intervals.ts"
import { RETRIEVAL_TASKS } from "./retrieval.ts"

const Synthetic = Schema.Struct({
  source: Schema.Literal("synthetic"),
  filler: Schema.optionalKey(Schema.Literals(["varied", "paper", "mixed"]).pipe(doc('filler text: varied sentences, the paper\'s garbage, or mixed per document (default mixed)'))),
})
const Corpus = Schema.Struct({
  source: Schema.Literal("corpus"),
  path: Schema.NonEmptyString.pipe(doc("a folder of .txt / .jsonl, or one file (relative to the workflow file)")),
  field: Schema.optionalKey(Schema.NonEmptyString.pipe(doc('JSONL field holding the text (default "text")'))),
})

const Seed = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

export const PasskeyParams = Schema.Struct({
  lengths: Schema.NonEmptyArray(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))).pipe(doc("target lengths: every prompt (BOS included) has fewer tokens")),
  trials: PosInt.pipe(doc("prompts per length (and depth), the same for every method (default 10, as the paper)"), withDefault(10)),
  depths: Schema.optionalKey(Schema.NonEmptyArray(Fraction).pipe(doc("shares of the filler before the info line, for a length × depth grid (default: uniformly random per trial, as the paper)"))),
  maxNew: PosInt.pipe(doc("tokens generated per trial (default 10, the paper's max_new_tokens)"), withDefault(10)),
  seed: Schema.optionalKey(Seed.pipe(doc("prompt seed: pass keys and split points (default the step's seed)"))),
})
export type PasskeyParams = typeof PasskeyParams.Type

export const NeedleParams = Schema.Struct({
  lengths: Schema.optionalKey(Schema.NonEmptyArray(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))).pipe(doc("sample lengths (default the perplexity lengths)"))),
  depths: Schema.optionalKey(Schema.NonEmptyArray(Fraction).pipe(doc("needle depths used on every document (default LongRoPE2's (i + 10j)/99 for document i, j = 0..9)"))),
  seed: Schema.optionalKey(Seed.pipe(doc("seed of the 7-digit numbers (default the data seed)"))),
})
export type NeedleParams = typeof NeedleParams.Type

export const ShortParams = Schema.Struct({
  length: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2)).pipe(doc("the short length (default L0, the original context)"))),
  scale: Schema.optionalKey(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(1)).pipe(doc("the baselines' scale: the extension being judged (default longest length / L0)"))),
})
export type ShortParams = typeof ShortParams.Type

/** Where the documents come from (default synthetic). */
export const EvalDataParams = Schema.Union([Synthetic, Corpus])

export const IntervalParams = Schema.Struct({
  level: Schema.Literals(WILSON_LEVELS).pipe(doc(`coverage of every interval (default 0.95; one of ${WILSON_LEVELS.join(", ")})`), withDefault(0.95)),
  replicates: PosInt.pipe(doc("bootstrap resamples for perplexities and means (default 2000)"), withDefault(2000)),
  resample: Schema.Literals(["documents", "windows"]).pipe(
    doc('what a perplexity\'s bootstrap resamples: whole documents with all their windows (default; windows of one document are correlated) or windows'),
    withDefault("documents"),
  ),
})
export type IntervalParams = typeof IntervalParams.Type

const Count = (what: string) => Schema.Int.check(Schema.isGreaterThanOrEqualTo(2), Schema.isLessThanOrEqualTo(64)).pipe(doc(what))

export const RetrievalParams = Schema.Struct({
  tasks: Schema.NonEmptyArray(Schema.Literals(RETRIEVAL_TASKS)).pipe(doc(`RULER-shaped needle tasks: ${RETRIEVAL_TASKS.join(", ")}`)),
  lengths: Schema.NonEmptyArray(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))).pipe(doc("target lengths: prompt (BOS included) + generated tokens fit in each")),
  depths: Schema.optionalKey(Schema.NonEmptyArray(Fraction).pipe(doc("shares of the haystack before the needles asked about, for the depth × length heatmap (default: every needle at random, as RULER)"))),
  trials: PosInt.pipe(doc("prompts per task, length and depth, the same for every method (default 20)"), withDefault(20)),
  haystack: Schema.Union([
    Schema.Literals(["paper", "varied", "needles"]),
    Schema.Struct({ file: Schema.NonEmptyString.pipe(doc("a plain-text file whose sentences hide the needles (relative to the workflow file)")) }),
  ]).pipe(doc('what hides the needles: the passkey filler ("paper", default), varied sentences, needles for other keys, or { file }'), withDefault("paper")),
  keys: Schema.optionalKey(Count("multikey: keys in the text, the asked one included (default 4)")),
  values: Schema.optionalKey(Count("multivalue: values of the one key (default 4)")),
  queries: Schema.optionalKey(Count("multiquery: keys asked at once (default 2)")),
  maxNew: Schema.optionalKey(PosInt.pipe(doc("tokens generated per trial (default the answer's tokens + 4)"))),
  seed: Schema.optionalKey(Seed.pipe(doc("prompt seed: keys, values and depths (default the step's seed)"))),
})
export type RetrievalParams = typeof RetrievalParams.Type

const PasskeyChoiceTask = Schema.Struct({
  name: Schema.Literal("passkey-choice"),
  items: PosInt.pipe(doc("items scored (default 100)"), withDefault(100)),
  length: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2)).pipe(doc("each prompt (BOS included) has fewer tokens (default 300; at most L0)"))),
  choices: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2), Schema.isLessThanOrEqualTo(16)).pipe(doc("choices per item, the key included (default 4)"))),
  shots: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(doc("few-shot examples per item, from the task's own train split (default 0)"))),
  seed: Schema.optionalKey(Seed.pipe(doc("item seed (default the step's seed)"))),
})

const FileTask = Schema.Struct({
  name: Schema.NonEmptyString.check(Schema.makeFilter((n: string) => n !== "passkey-choice" || 'the built-in "passkey-choice" takes no files')).pipe(doc("the task's name in metrics.json")),
  files: Schema.NonEmptyArray(Schema.NonEmptyString).pipe(doc('JSONL task files (shards, read in order; relative to the workflow file), one item a line: {"context", "choices", "gold"}')),
  fewshot: Schema.optionalKey(
    Schema.Struct({
      files: Schema.NonEmptyArray(Schema.NonEmptyString).pipe(doc("JSONL files the examples are drawn from (lm-eval's fewshot split)")),
      shots: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)).pipe(doc("examples before each item")),
    }).pipe(doc("few-shot prompts: { files, shots }")),
  ),
  description: Schema.optionalKey(Schema.String.pipe(doc("text before every prompt (lm-eval's description)"))),
})

/** One multiple-choice task: the built-in passkey-choice, or task files. */
export const TaskParams = Schema.Union([PasskeyChoiceTask, FileTask])
export type TaskParams = typeof TaskParams.Type
