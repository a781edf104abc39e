/**
 * The nested params of the `evaluate` stage (its `data`, `passkey`, `needle` and `short`), as Effect Schemas:
 * the workflow loader checks them with positions, `ropeway list` shows their descriptions.
 */
import { Schema } from "effect"
import { doc, Fraction, PosInt, withDefault } from "../../common/schema.ts"

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
