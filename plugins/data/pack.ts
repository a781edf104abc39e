/**
 * Packing documents into fixed-length training sequences.
 *
 * The stream is: for each epoch, the documents in a seeded shuffled order, each framed as
 * [BOS, ...tokens, EOS] (LongRoPE: "segments bookended with the BOS and EOS tokens"), concatenated and
 * cut every `seqLen` tokens. There is no padding: the stream runs on into the next epoch.
 *
 * LongRoPE2's mixed context window: each sequence also carries position ids that restart at 0 where a
 * document starts, and the lengths of its segments (a segment = the part of one document inside one
 * sequence), so the trainer can choose the RoPE factor set for each document's own length. A document
 * cut by a sequence boundary continues in the next sequence from position 0 again, so positions never
 * exceed `seqLen - 1` (the length the RoPE table covers).
 *
 * The data cursor (epoch, doc, offset) names the next token of the stream; saving it with a checkpoint and
 * passing it back resumes exactly.
 */
import { inputError } from "../../common/errors.ts"
import type { Corpus } from "./corpus.ts"
import { Rng } from "../../common/rng.ts"
import type { TextTokenizer } from "./tokenizer.ts"

/** Documents as token ids (without BOS/EOS), by index. */
export interface DocumentSource {
  readonly size: number
  tokens(i: number): readonly number[]
  /** Answer spans [start, end) in tokens(i)'s ids, where the source knows them (synthetic documents). */
  answers?(i: number): ReadonlyArray<{ readonly start: number; readonly end: number }>
}

/** A text corpus seen through a tokenizer. */
export const tokenizedCorpus = (corpus: Corpus, tok: TextTokenizer): DocumentSource => ({
  size: corpus.size,
  tokens: (i) => tok.encode(corpus.text(i)),
})

/** Position in the stream: epoch, index into that epoch's document order, token offset in the framed document. */
export interface DataCursor {
  readonly epoch: number
  readonly doc: number
  readonly offset: number
}

export interface PackedSequence {
  /** seqLen token ids. */
  readonly tokens: Int32Array
  /** seqLen position ids: 0, 1, 2, ... restarting at each segment (or 0..seqLen-1 without restarts). */
  readonly positions: Int32Array
  /** Length of each segment, in order; they sum to seqLen. */
  readonly docLengths: readonly number[]
  /** Corpus index of each segment's document, parallel to docLengths. */
  readonly docIds: readonly number[]
  /** Cursor at the first token of this sequence. */
  readonly start: DataCursor
  /** Loss weight of each token as a target (seqLen values): `answerWeight` on answer tokens, 1 elsewhere; only with `answerWeight`. */
  readonly weights?: Float32Array
}

export interface PackOptions {
  readonly source: DocumentSource
  readonly seqLen: number
  /** Framing ids; undefined adds nothing (e.g. a tokenizer without BOS). */
  readonly bos: number | undefined
  readonly eos: number | undefined
  readonly seed: number
  /** Shuffle documents per epoch (default true); false keeps corpus order. */
  readonly shuffle?: boolean
  /** Truncate each framed document to this many tokens (LongRoPE2 truncates docs to 8k/128k). */
  readonly maxDocTokens?: number
  /** Restart position ids per segment (default true, mixed context window); false gives 0..seqLen-1. */
  readonly restartPositions?: boolean
  /** Resume from a saved cursor. */
  readonly cursor?: DataCursor
  /**
   * Loss weight of answer tokens (the source's `answers`; BOS/EOS and other tokens weigh 1), so the few
   * tokens that need retrieval are not drowned by filler in the mean. Default: no weights.
   */
  readonly answerWeight?: number
  /**
   * Weigh the token right after each answer too (answerWeight only): the token that ends the answer. A key
   * is only retrieved when the copy stops where the key stops; without it the tiny model's misses at long
   * range were mostly a right key with one digit too many.
   */
  readonly answerStop?: boolean
}

/** The document order of one epoch: a seeded permutation, independent of every other epoch. */
export const epochOrder = (size: number, seed: number, epoch: number, shuffle = true): Uint32Array => {
  if (!shuffle) return Uint32Array.from({ length: size }, (_, i) => i)
  return Rng.seeded(seed, 0x5eed, epoch).permutation(size)
}

const checkCursor = (c: DataCursor, size: number): void => {
  const ok = (n: number) => Number.isSafeInteger(n) && n >= 0
  if (!ok(c.epoch) || !ok(c.doc) || !ok(c.offset) || c.doc >= size)
    throw inputError("data cursor", `${JSON.stringify(c)} is not a position in a corpus of ${size} documents`)
}

export class Packer {
  readonly seqLen: number
  private readonly source: DocumentSource
  private readonly opts: PackOptions
  private epoch: number
  private doc: number
  private offset: number
  private order: Uint32Array
  private current: readonly number[] | undefined // framed tokens of order[doc], cached
  private currentWeights: Float32Array | undefined // their loss weights (answerWeight only)

  constructor(opts: PackOptions) {
    if (!Number.isSafeInteger(opts.seqLen) || opts.seqLen < 1) throw new RangeError(`seqLen must be a positive integer, got ${opts.seqLen}`)
    if (opts.maxDocTokens !== undefined && (!Number.isSafeInteger(opts.maxDocTokens) || opts.maxDocTokens < 1))
      throw new RangeError(`maxDocTokens must be a positive integer, got ${opts.maxDocTokens}`)
    if (opts.source.size < 1) throw new RangeError("packing an empty document source")
    if (opts.answerWeight !== undefined) {
      if (!(Number.isFinite(opts.answerWeight) && opts.answerWeight > 0)) throw new RangeError(`answerWeight must be a positive number, got ${opts.answerWeight}`)
      if (opts.source.answers === undefined) throw inputError("data.answerWeight", "this document source has no answer spans (only synthetic documents do)")
    }
    if (opts.answerStop === true && opts.answerWeight === undefined) throw inputError("data.answerStop", "weighs the token after each answer by answerWeight: set data.answerWeight")
    this.source = opts.source
    this.seqLen = opts.seqLen
    this.opts = opts
    const c = opts.cursor ?? { epoch: 0, doc: 0, offset: 0 }
    checkCursor(c, this.source.size)
    this.epoch = c.epoch
    this.doc = c.doc
    this.offset = c.offset
    this.order = epochOrder(this.source.size, opts.seed, this.epoch, opts.shuffle ?? true)
    this.current = undefined
    if (this.offset > 0 && this.offset >= this.framed().length)
      throw inputError("data cursor", `offset ${this.offset} is past the end of document ${this.doc} of epoch ${this.epoch}`)
  }

  /** Where the next sequence starts; plain JSON data for checkpoints. */
  cursor(): DataCursor {
    return { epoch: this.epoch, doc: this.doc, offset: this.offset }
  }

  private framed(): readonly number[] {
    if (this.current !== undefined) return this.current
    const id = this.order[this.doc] as number
    const t: number[] = []
    if (this.opts.bos !== undefined) t.push(this.opts.bos)
    for (const x of this.source.tokens(id)) t.push(x)
    if (this.opts.eos !== undefined) t.push(this.opts.eos)
    if (this.opts.maxDocTokens !== undefined && t.length > this.opts.maxDocTokens) t.length = this.opts.maxDocTokens
    this.current = t
    const w = this.opts.answerWeight
    if (w !== undefined) {
      const weights = new Float32Array(t.length).fill(1)
      const shift = this.opts.bos === undefined ? 0 : 1
      const stop = this.opts.answerStop === true ? 1 : 0
      for (const a of this.opts.source.answers!(id)) for (let k = a.start + shift; k < Math.min(a.end + shift + stop, t.length); k++) weights[k] = w
      this.currentWeights = weights
    }
    return t
  }

  private advanceDoc(): void {
    this.current = undefined
    this.currentWeights = undefined
    this.offset = 0
    this.doc++
    if (this.doc >= this.source.size) {
      this.doc = 0
      this.epoch++
      this.order = epochOrder(this.source.size, this.opts.seed, this.epoch, this.opts.shuffle ?? true)
    }
  }

  next(): PackedSequence {
    const start = this.cursor()
    const n = this.seqLen
    const tokens = new Int32Array(n)
    const positions = new Int32Array(n)
    const docLengths: number[] = []
    const docIds: number[] = []
    const weights = this.opts.answerWeight === undefined ? undefined : new Float32Array(n)
    const restart = this.opts.restartPositions ?? true
    let filled = 0
    let emptyRun = 0 // documents in a row that gave no tokens: an epoch of them means the stream is empty
    while (filled < n) {
      const doc = this.framed()
      const take = Math.min(doc.length - this.offset, n - filled)
      if (take > 0) {
        emptyRun = 0
        for (let k = 0; k < take; k++) {
          tokens[filled + k] = doc[this.offset + k] as number
          positions[filled + k] = restart ? k : filled + k
          if (weights !== undefined) weights[filled + k] = this.currentWeights![this.offset + k]!
        }
        docLengths.push(take)
        docIds.push(this.order[this.doc] as number)
        filled += take
        this.offset += take
      } else if (++emptyRun > this.source.size) {
        throw inputError("corpus", "every document is empty after tokenization: nothing to pack")
      }
      if (this.offset >= doc.length) this.advanceDoc()
    }
    return { tokens, positions, docLengths, docIds, start, ...(weights === undefined ? {} : { weights }) }
  }
}
