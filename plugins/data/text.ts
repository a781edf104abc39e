/**
 * Building blocks for synthetic documents and evaluation prompts: filler text (varied sentences, or the
 * paper's passkey garbage), random names, and encoding a document piece by piece so that answer spans are
 * exact token ranges.
 */
import type { Rng } from "../../common/rng.ts"
import type { TextTokenizer } from "./tokenizer.ts"

/** The passkey filler of landmark-attention / YaRN / LongRoPE (§5.2), one repeat unit. */
export const PAPER_GARBAGE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

/** `PAPER_GARBAGE` repeated with single spaces (Python's `" ".join([garbage] * k)`), cut to `chars` characters. */
export const paperGarbage = (chars: number): string => {
  if (chars <= 0) return ""
  const reps = Math.ceil((chars + 1) / (PAPER_GARBAGE.length + 1))
  return Array.from({ length: reps }, () => PAPER_GARBAGE).join(" ").slice(0, chars)
}

const PAPER_SENTENCES = PAPER_GARBAGE.split(/(?<=\.) /)

// Small word lists: enough variety that a model learns word and sentence statistics, not one line.
const NAMES = ["Anna", "Boris", "Chen", "Dara", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Luis", "Mara", "Nils", "Olga", "Pablo", "Rosa", "Sami", "Tomas", "Vera"]
const ANIMALS = ["fox", "heron", "otter", "sparrow", "horse", "cat", "dog", "owl", "goat", "rabbit", "wolf", "crow", "deer", "beetle", "salmon", "badger"]
const THINGS = ["lamp", "boat", "letter", "garden", "bridge", "kettle", "map", "window", "basket", "clock", "ladder", "book", "fence", "wagon", "coat", "drum"]
const PLACES = ["river", "market", "valley", "harbor", "forest", "village", "station", "library", "meadow", "kitchen", "hill", "square", "mill", "orchard", "shore", "road"]
const ADJS = ["old", "quiet", "bright", "small", "heavy", "green", "cold", "narrow", "golden", "wet", "tall", "gentle", "rusty", "busy", "empty", "warm"]
const VERBS_PAST = ["carried", "painted", "found", "repaired", "watched", "opened", "followed", "cleaned", "counted", "lifted", "sold", "hid", "borrowed", "measured"]
const VERBS_3 = ["carries", "paints", "finds", "repairs", "watches", "opens", "follows", "cleans", "counts", "lifts", "sells", "hides", "borrows", "measures"]
const TIMES = ["in the morning", "at noon", "before dusk", "after the rain", "on Sunday", "every spring", "late at night", "in winter", "at dawn", "during the storm"]
const WEATHER = ["rain fell", "the wind rose", "snow drifted", "the sun came out", "fog rolled in", "the clouds broke"]
const NUMBERS = ["two", "three", "four", "five", "seven", "nine", "twelve", "many", "a few", "several"]

const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1)

/** One natural-ish English sentence. */
export const fillerSentence = (rng: Rng): string => {
  const p = <T>(xs: readonly T[]): T => rng.pick(xs)
  switch (rng.int(0, 9)) {
    case 0: return `${p(NAMES)} ${p(VERBS_PAST)} the ${p(ADJS)} ${p(THINGS)} ${p(TIMES)}.`
    case 1: return `The ${p(ADJS)} ${p(ANIMALS)} ${p(VERBS_3)} a ${p(THINGS)} near the ${p(PLACES)}.`
    case 2: return `${cap(p(TIMES))}, ${p(WEATHER)} over the ${p(PLACES)}.`
    case 3: return `${p(NAMES)} and ${p(NAMES)} walked to the ${p(PLACES)} with ${p(NUMBERS)} ${p(ANIMALS)}s.`
    case 4: return `There was a ${p(ADJS)} ${p(THINGS)} in the ${p(PLACES)}, and nobody knew who ${p(VERBS_PAST)} it.`
    case 5: return `Every day ${p(NAMES)} ${p(VERBS_3)} the ${p(THINGS)} and then ${p(VERBS_3)} the ${p(ADJS)} ${p(THINGS)}.`
    case 6: return `The ${p(PLACES)} was ${p(ADJS)} ${p(TIMES)}, so the ${p(ANIMALS)}s stayed by the ${p(THINGS)}.`
    case 7: return `"Where is the ${p(THINGS)}?" asked ${p(NAMES)}, looking at the ${p(ADJS)} ${p(PLACES)}.`
    case 8: return `${cap(p(NUMBERS))} ${p(ADJS)} ${p(THINGS)}s stood by the ${p(PLACES)} ${p(TIMES)}.`
    default: return `When ${p(WEATHER)}, ${p(NAMES)} ${p(VERBS_PAST)} the ${p(THINGS)} of the ${p(ADJS)} ${p(ANIMALS)}.`
  }
}

export type FillerKind = "varied" | "paper"

/** An endless stream of filler sentences; "paper" cycles the five garbage sentences in order. */
export const fillerStream = (kind: FillerKind, rng: Rng): (() => string) => {
  if (kind === "varied") return () => fillerSentence(rng)
  let i = 0
  return () => PAPER_SENTENCES[i++ % PAPER_SENTENCES.length] as string
}

/** A random hyphenated key such as "quiet-heron", for needles and key–value pairs. */
export const randomKeyName = (rng: Rng): string => `${rng.pick(ADJS)}-${rng.pick([...ANIMALS, ...THINGS, ...PLACES])}`

// ---------------------------------------------------------------------------------------------------
// Piecewise encoding

/** Token range [start, end) of an answer inside a document's ids, and the answer text it decodes to. */
export interface AnswerSpan {
  readonly answer: string
  readonly start: number
  readonly end: number
}

/** A piece of a document; an answer piece's tokens become an AnswerSpan. */
export interface Piece {
  readonly text: string
  /** Set on answer pieces: the answer itself (the piece text may carry a leading space). */
  readonly answer?: string
}

export interface Encoded {
  readonly text: string
  readonly ids: number[]
  readonly answers: AnswerSpan[]
}

const sentinels = new WeakMap<TextTokenizer, readonly number[]>()
/** The ids of "\n", cached per tokenizer. */
const sentinelOf = (tok: TextTokenizer): readonly number[] => {
  let s = sentinels.get(tok)
  if (s === undefined) sentinels.set(tok, (s = tok.encode("\n")))
  return s
}

/**
 * Ids of `text` as it tokenizes in the middle of a document, not at its start. SentencePiece-style
 * tokenizers (LLaMA-2, Mistral) put "▁" in front of every encoded string, so encoding a later piece on its
 * own would insert a space; encoding "\n" + text and dropping the ids of "\n" avoids that. Where "\n"
 * merges with the text (the ids do not start with those of "\n"), the plain encoding is used.
 */
export const encodeContinuation = (tok: TextTokenizer, text: string): number[] => {
  const sentinel = sentinelOf(tok)
  const both = tok.encode(`\n${text}`)
  const n = sentinel.length
  if (n > 0 && both.length >= n && sentinel.every((x, i) => both[i] === x)) return both.slice(n)
  return tok.encode(text)
}

/** Text of continuation ids (the inverse of encodeContinuation), keeping a leading space a decoder would strip. */
export const decodeContinuation = (tok: TextTokenizer, ids: readonly number[]): string => {
  const sentinel = sentinelOf(tok)
  const head = tok.decode(sentinel)
  const full = tok.decode([...sentinel, ...ids])
  return full.startsWith(head) ? full.slice(head.length) : tok.decode(ids)
}

/**
 * Encodes pieces separately and concatenates the ids, so answer spans are exact token ranges. (For a
 * byte-level tokenizer this equals encoding the joined text; for BPE the ids can differ from it only at
 * piece boundaries, so score and train on `ids`, not on a re-encoding of `text`.) `atStart` says whether
 * the first piece opens a document; every other piece is encoded as a continuation. Leading tokens of an
 * answer piece that are pure whitespace are left out of its span: only the answer itself is scored.
 */
export const encodePieces = (tok: TextTokenizer, pieces: readonly Piece[], atStart = false): Encoded => {
  const ids: number[] = []
  const answers: AnswerSpan[] = []
  pieces.forEach((piece, k) => {
    const t = k === 0 && atStart ? tok.encode(piece.text) : encodeContinuation(tok, piece.text)
    if (piece.answer !== undefined) {
      let s = 0
      while (s < t.length - 1 && tok.decode([t[s] as number]).trim() === "") s++
      answers.push({ answer: piece.answer, start: ids.length + s, end: ids.length + t.length })
    }
    for (const x of t) ids.push(x)
  })
  return { text: pieces.map((p) => p.text).join(""), ids, answers }
}
