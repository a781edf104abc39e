/**
 * Where a search's fitness samples come from: synthetic documents of a fixed length (so shorter fidelities
 * score prefixes of the same documents), or a corpus' documents with enough tokens, in order.
 */
import { resolve } from "node:path"
import { inputError } from "../../common/errors.ts"
import { openCorpus } from "../data/corpus.ts"
import type { SearchDataParams } from "../data/params.ts"
import { syntheticDocument } from "../data/synthetic.ts"
import type { TextTokenizer } from "../data/tokenizer.ts"
import type { SampleSource } from "./fitness.ts"

/** Documents of `docLength` tokens (synthetic) or the corpus' documents with at least that many, in order. */
export function sampleSource(data: SearchDataParams | undefined, stepSeed: number, tokenizer: TextTokenizer, docLength: number): SampleSource {
  const d = data ?? {}
  const seed = d.seed ?? stepSeed
  if (d.source !== "corpus") {
    const memo = new Map<string, readonly number[]>()
    return {
      tokenizer,
      seed,
      document: (i, minTokens, tasks) => {
        // Always the same length, so shorter fidelities score prefixes of the same documents.
        const length = Math.max(docLength, minTokens)
        const t = tasks ?? d.tasks
        const k = `${i}:${length}:${JSON.stringify(t ?? null)}`
        let ids = memo.get(k)
        if (ids === undefined) {
          ids = syntheticDocument({ tokenizer, seed, length, ...(t === undefined ? {} : { tasks: t }), ...(d.filler === undefined ? {} : { filler: d.filler }) }, i).ids
          memo.set(k, ids)
        }
        return ids
      },
    }
  }
  const where = resolve(d.path!)
  const corpus = openCorpus(where, d.field === undefined ? {} : { field: d.field })
  const long: number[][] = []
  let scanned = 0
  return {
    tokenizer,
    seed,
    document: (i, minTokens) => {
      const need = Math.max(docLength, minTokens)
      while (long.length <= i && scanned < corpus.size) {
        const ids = tokenizer.encode(corpus.text(scanned++))
        if (ids.length >= need) long.push(ids)
      }
      const doc = long[i]
      if (doc === undefined || doc.length < minTokens) throw inputError(where, `needs at least ${i + 1} documents of ≥ ${need} tokens; found ${long.length}`)
      return doc
    },
  }
}
