/**
 * The `data:` params of the built-in stages as Effect Schemas: where documents come from (seeded synthetic
 * ones, or a corpus whose path is resolved against the workflow file), checked at load with positions.
 */
import { Schema } from "effect"
import { doc, NonNeg, PosInt } from "../../common/schema.ts"
import { KEY_DRAWS, SYNTHETIC_TASKS, type SyntheticTask } from "./synthetic.ts"

const FILLERS = ["varied", "paper", "mixed"] as const

/** Task weights, e.g. { passkey: 2, copy: 1 }; a task left out weighs 0 (all four when absent). */
export const TaskWeights = Schema.Struct(
  Object.fromEntries(SYNTHETIC_TASKS.map((t) => [t, Schema.optionalKey(NonNeg)])) as { readonly [K in SyntheticTask]: Schema.optionalKey<typeof NonNeg> },
)

const Filler = Schema.Literals(FILLERS).pipe(doc("filler text: varied sentences, the paper's garbage, or mixed per document (default mixed)"))
const CorpusPath = Schema.NonEmptyString.pipe(doc("a folder of .txt / .jsonl, or one such file (relative to the workflow file)"))
const CorpusField = Schema.NonEmptyString.pipe(doc('JSONL field holding the text (default "text")'))
const DataSeed = Schema.Int.pipe(doc("seed of the documents (default the step's)"))

/**
 * One struct for both sources (so an error names the one field that is wrong, not every way the value
 * fails a union): the corpus fields apply to `source: corpus` only (which needs `path`), the synthetic
 * ones to the synthetic source only.
 */
const bySource = (synthetic: readonly string[]) =>
  Schema.makeFilter((d: { readonly source?: "synthetic" | "corpus"; readonly path?: string; readonly field?: string }) => {
    const o = d as Record<string, unknown>
    if (d.source === "corpus") {
      const stray = synthetic.filter((k) => o[k] !== undefined).map((k) => ({ path: [k], issue: 'applies to source "synthetic" only' }))
      return d.path === undefined ? [...stray, { path: ["path"], issue: 'missing key "path": the corpus (a folder of .txt / .jsonl, or one such file)' }] : stray
    }
    return ["path", "field"].filter((k) => o[k] !== undefined).map((k) => ({ path: [k], issue: 'applies to source "corpus" only' }))
  })

const SourceFields = {
  source: Schema.optionalKey(Schema.Literals(["synthetic", "corpus"]).pipe(doc("synthetic (default) or corpus"))),
  seed: Schema.optionalKey(DataSeed),
  path: Schema.optionalKey(CorpusPath),
  field: Schema.optionalKey(CorpusField),
}

const SEARCH_SYNTHETIC = ["tasks", "filler"] as const

/** The search's documents: `{source?: synthetic, seed?, tasks?, filler?}` (default) or `{source: corpus, path, field?, seed?}`. */
export const SearchDataParams = Schema.Struct({
  ...SourceFields,
  tasks: Schema.optionalKey(TaskWeights),
  filler: Schema.optionalKey(Filler),
}).check(bySource(SEARCH_SYNTHETIC))
export type SearchDataParams = typeof SearchDataParams.Type

/** Tokens per synthetic document: an integer, or [min, max] drawn per document. */
const DocLength = Schema.Union([PosInt, Schema.Tuple([PosInt, PosInt]).check(Schema.makeFilter(([a, b]: readonly [number, number]) => a <= b || { path: [1], issue: `expected ≥ min (${a})` }))])

const TRAIN_SYNTHETIC = ["tasks", "docLength", "documents", "filler", "kvPairs", "kvQueries", "copies", "keys", "answerWeight", "answerStop"] as const

/** The training documents (see plugins/data/training.ts): synthetic (default) or a corpus. */
export const TrainDataParams = Schema.Struct({
  ...SourceFields,
  tasks: Schema.optionalKey(TaskWeights),
  docLength: Schema.optionalKey(DocLength.pipe(doc("tokens per document, or [min, max] (default seqLen − 1: one document per packed sequence)"))),
  documents: Schema.optionalKey(PosInt.pipe(doc("documents in the pool (default 100000; made on demand)"))),
  filler: Schema.optionalKey(Filler),
  kvPairs: Schema.optionalKey(PosInt.pipe(doc("pairs per key-value document (default 4)"))),
  kvQueries: Schema.optionalKey(PosInt.pipe(doc("queries per key-value document (default 1)"))),
  copies: Schema.optionalKey(PosInt.pipe(doc("passkey lines per copy drill (default 4)"))),
  keys: Schema.optionalKey(Schema.Literals(KEY_DRAWS).pipe(doc('"uniform" (1..50000, §5.2) or "digits" (digit count uniform in 1..5)'))),
  answerWeight: Schema.optionalKey(Schema.Finite.check(Schema.isGreaterThan(0)).pipe(doc("loss weight of the answer tokens (default 1)"))),
  answerStop: Schema.optionalKey(Schema.Boolean.pipe(doc("the token right after each answer (where it stops) weighs answerWeight too (default false)"))),
}).check(bySource(TRAIN_SYNTHETIC))
export type TrainDataParams = typeof TrainDataParams.Type
