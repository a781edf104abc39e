/**
 * The training documents.
 * - synthetic (default): plugins/data's generator with the tokenizer. `tasks` weights (default: all four),
 *   `docLength` tokens per document, a number or [min, max] (default seqLen − 1: with BOS and EOS a document
 *   is exactly one packed sequence of seqLen + 1), `documents` in the pool (default 100000; made on demand),
 *   `filler` "varied" | "paper" | "mixed", `kvPairs` / `kvQueries` per key-value document (default 4 / 1),
 *   `copies` passkey lines per `copy` drill document (default 4), `keys` "uniform" (1..50000, default) |
 *   "digits" (see SyntheticOptions.keys), `answerWeight` (loss weight of the answer tokens, default 1:
 *   retrieval is a few tokens per document, and weighting them is what taught the tiny model to copy; see
 *   workflows/tiny-pretrain.yaml), `answerStop` (the token after each answer weighs as much: where it ends).
 * - corpus: `path` (a folder of .txt/.jsonl or one such file), JSONL `field` (default "text").
 * `seed` (default the step's) seeds the synthetic documents and the shuffle. The params' shapes are
 * checked by their schema (params.ts); what is left here is whether every task fits the length.
 */
import { resolve } from "node:path"
import { inputError } from "../../common/errors.ts"
import { openCorpus } from "./corpus.ts"
import { type DocumentSource, tokenizedCorpus } from "./pack.ts"
import type { TrainDataParams } from "./params.ts"
import { SYNTHETIC_TASKS, syntheticDocument, syntheticSource, taskWeight } from "./synthetic.ts"
import type { TextTokenizer } from "./tokenizer.ts"

export interface TrainData {
  readonly source: DocumentSource
  /** Seed of the packer's per-epoch shuffle. */
  readonly seed: number
  /** For logs and the manifest. */
  readonly describe: string
  /** Loss weight of answer tokens (synthetic documents); undefined: every token weighs 1. */
  readonly answerWeight?: number
  /** The token after each answer weighs answerWeight too. */
  readonly answerStop?: boolean
}

export function trainingData(stage: string, data: TrainDataParams | undefined, tokenizer: TextTokenizer, seqLen: number, stepSeed: number): TrainData {
  const o = data ?? {}
  const seed = o.seed ?? stepSeed
  if (o.source === "corpus") {
    const corpus = openCorpus(resolve(o.path!), o.field === undefined ? {} : { field: o.field })
    return { source: tokenizedCorpus(corpus, tokenizer), seed, describe: `corpus ${corpus.path} (${corpus.size} documents, tokenizer ${tokenizer.name})` }
  }
  const length = o.docLength ?? Math.max(1, seqLen - 1)
  const documents = o.documents ?? 100_000
  const opts = {
    tokenizer, seed, length,
    ...(o.kvPairs === undefined ? {} : { kvPairs: o.kvPairs }),
    ...(o.kvQueries === undefined ? {} : { kvQueries: o.kvQueries }),
    ...(o.copies === undefined ? {} : { copies: o.copies }),
    ...(o.tasks === undefined ? {} : { tasks: o.tasks }),
    ...(o.filler === undefined ? {} : { filler: o.filler }),
    ...(o.keys === undefined ? {} : { keys: o.keys }),
  }
  const source = syntheticSource(opts, documents)
  // Make each task's shortest document now: a task that does not fit the length fails here, naming the
  // param, instead of at whichever step first draws it.
  const shortest = typeof length === "number" ? length : length[0]
  for (const task of SYNTHETIC_TASKS) {
    if (!(taskWeight(task, opts.tasks) > 0)) continue
    try {
      syntheticDocument({ ...opts, length: shortest, tasks: { [task]: 1 } }, 0)
    } catch (e) {
      throw inputError(`${stage}.data.docLength`, `${(e as Error).message} (set data.docLength or data.tasks)`)
    }
  }
  return {
    source, seed,
    describe: `synthetic seed ${seed}, ${documents} documents of ${JSON.stringify(length)} tokens, tasks ${JSON.stringify(o.tasks ?? "all")}` +
      (o.answerWeight === undefined ? "" : `, answer tokens${o.answerStop === true ? " and the token after each" : ""} weigh ${o.answerWeight}`),
    ...(o.answerWeight === undefined ? {} : { answerWeight: o.answerWeight }),
    ...(o.answerStop === undefined ? {} : { answerStop: o.answerStop }),
  }
}
