/**
 * The documents an evaluation scores: synthetic ones of exactly `tokens` tokens, or a corpus' documents in
 * a seeded order, the first `samples` with enough tokens, cut to `tokens`. The same documents serve every
 * method and length; each has an id for metrics.json.
 */
import { resolve } from "node:path"
import { Rng } from "../../common/rng.ts"
import { openCorpus } from "../data/corpus.ts"
import { syntheticDocument } from "../data/synthetic.ts"
import type { TextTokenizer } from "../data/tokenizer.ts"
import type { Doc } from "./protocols.ts"

export type EvalData =
  | { readonly source: "synthetic"; readonly filler?: "varied" | "paper" | "mixed" }
  | { readonly source: "corpus"; readonly path: string; readonly field?: string }

export interface DocumentsRequest {
  readonly data: EvalData
  readonly samples: number
  readonly seed: number
  readonly tokens: number
  /** Corpus documents need at least this many tokens (default `tokens`). */
  readonly minTokens: number | undefined
}

/** The documents and a description of where they came from. */
export function evaluationDocuments(r: DocumentsRequest, tok: TextTokenizer): { docs: Doc[]; data: string } {
  const { seed, tokens, samples } = r
  if (r.data.source === "synthetic") {
    const filler = r.data.filler
    const opts = { tokenizer: tok, seed, length: tokens, ...(filler === undefined ? {} : { filler }) }
    const tag = filler === undefined ? "" : `,filler=${filler}`
    const docs = Array.from({ length: samples }, (_, i) => ({ id: `synthetic(seed=${seed},tokens=${tokens}${tag})#${i}`, ids: syntheticDocument(opts, i).ids }))
    return { docs, data: `synthetic long-range documents (plugins/data), seed ${seed}, ${tokens} tokens each${filler === undefined ? "" : `, ${filler} filler`}, tokenizer ${tok.name}` }
  }
  // the workflow loader made it absolute (against the workflow file); a direct call resolves against the cwd
  const path = resolve(r.data.path)
  const corpus = openCorpus(path, r.data.field === undefined ? {} : { field: r.data.field })
  const need = r.minTokens ?? tokens
  // a seeded order, then the first documents long enough: the same samples for every method and length
  const order = Rng.seeded(seed, 0xe7a1).permutation(corpus.size)
  const docs: Doc[] = []
  for (const i of order) {
    const ids = tok.encode(corpus.text(i))
    if (ids.length >= need) docs.push({ id: corpus.where(i), ids: ids.slice(0, tokens) })
    if (docs.length === samples) break
  }
  if (docs.length < samples) {
    throw new Error(`only ${docs.length} of ${corpus.size} documents in ${path} have ≥ ${need} tokens (${tok.name}); need ${samples}`)
  }
  const shorter = need < tokens ? `, shorter ones skipped per length (minTokens ${need})` : ""
  return { docs, data: `corpus ${path}, seeded order (seed ${seed}), first ${samples} documents with ≥ ${need} tokens, cut to ${tokens}${shorter}, tokenizer ${tok.name}` }
}
