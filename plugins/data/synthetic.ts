/**
 * A synthetic long-range corpus, generated from a seed with no downloads: filler text with passkeys,
 * key–value recall and needles at random depths. Every document has an exact length in tokens of the
 * given tokenizer and lists its answers as token spans, so perplexity can be scored on answers only
 * (LongRoPE2's needle-driven PPL) and retrieval can be checked.
 *
 * Document i depends only on (seed, i), so any document can be made on its own (random access, resume).
 */
import type { Corpus } from "./corpus.ts"
import type { DocumentSource } from "./pack.ts"
import { Rng } from "../../common/rng.ts"
import { type AnswerSpan, type Encoded, type FillerKind, type Piece, decodeContinuation, encodePieces, fillerStream, randomKeyName } from "./text.ts"
import type { TextTokenizer } from "./tokenizer.ts"

/** §5.2 task line. */
export const PASSKEY_TASK =
  "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there."
/** §5.4 instruction (with its newline). */
export const NEEDLE_INSTRUCTION =
  "A special magic number is hidden within the following text. Make sure to memorize it. I will quiz you about the number afterwards.\n"
const KV_INSTRUCTION = "Remember the value of each key in the text below. I will ask about them afterwards.\n"

export type SyntheticTask = "passkey" | "kv" | "needle" | "filler" | "copy"

export interface SyntheticOptions {
  readonly tokenizer: TextTokenizer
  readonly seed: number
  /** Tokens per document (exact), or an inclusive range to draw each document's length from. */
  readonly length: number | readonly [number, number]
  /** Relative weights of the tasks; default 1 each. A task with weight 0 never appears. */
  readonly tasks?: Partial<Record<SyntheticTask, number>>
  /** "varied" sentences, the paper's passkey garbage, or "mixed" (each document picks one); default mixed. */
  readonly filler?: FillerKind | "mixed"
  /** Key–value pairs per kv document (default 4) and how many are asked about (default 1). */
  readonly kvPairs?: number
  readonly kvQueries?: number
  /** Passkey line pairs per `copy` document (default 4). */
  readonly copies?: number
  /**
   * How passkeys (passkey and copy tasks) are drawn: "uniform" over 1..50000 as §5.2 (default), or
   * "digits": the digit count uniform in 1..5, then uniform among those keys ≤ 50000. Under "uniform" 80%
   * of keys have 5 digits, and a small model learns that prior: at long range it copies a 4-digit key and
   * then adds a fifth digit (measured on the tiny model: every miss at 4096 tokens after a 1024-token
   * fine-tune was a 4-digit key answered with 5). "digits" trains the stop as often as each length.
   */
  readonly keys?: KeyDraw
}

/** How passkeys are drawn (SyntheticOptions.keys). */
export const KEY_DRAWS = ["uniform", "digits"] as const
export type KeyDraw = (typeof KEY_DRAWS)[number]

const MAX_KEY = 50000
/** A passkey under `keys` (see SyntheticOptions.keys). */
export const drawPasskey = (rng: Rng, keys: KeyDraw | undefined): number => {
  if (keys !== "digits") return rng.int(1, MAX_KEY)
  const digits = rng.int(1, 5)
  return rng.int(10 ** (digits - 1), Math.min(10 ** digits - 1, MAX_KEY))
}

export interface SyntheticDocument {
  readonly index: number
  readonly task: SyntheticTask
  readonly filler: FillerKind
  /** The document text: the pieces joined. */
  readonly text: string
  /** Token ids (no BOS/EOS), exactly the document length; answer spans index into these. */
  readonly ids: number[]
  readonly answers: AnswerSpan[]
  /** For each hidden fact, where it starts as a fraction of the document's tokens. */
  readonly depths: number[]
}

/** A document plan: fixed head, facts inserted at depths (fractions of the filler), fixed tail. */
export interface DocumentPlan {
  readonly head: readonly Piece[]
  readonly inserts: ReadonlyArray<{ readonly pieces: readonly Piece[]; readonly depth: number }>
  readonly tail: readonly Piece[]
}

const planFor = (task: SyntheticTask, rng: Rng, opts: SyntheticOptions): DocumentPlan => {
  switch (task) {
    case "filler":
      return { head: [], inserts: [], tail: [] }
    case "passkey": {
      const k = String(drawPasskey(rng, opts.keys))
      const depth = rng.float()
      return {
        head: [{ text: `${PASSKEY_TASK}\n` }],
        inserts: [{ depth, pieces: [{ text: `\nThe pass key is ${k}. Remember it. ${k} is the pass key.\n` }] }],
        tail: [{ text: "\nWhat is the pass key? The pass key is" }, { text: ` ${k}`, answer: k }, { text: "." }],
      }
    }
    case "copy": {
      // Pairs of passkey lines with fresh keys, "The pass key is K." then, after filler of random length,
      // the same line again, whose K is the answer: retrieval by content at short, varying distances
      // (a fixed distance would be learnt as a positional shortcut). Dense practice of the induction that
      // long-distance retrieval runs on: tiny models learn the passkey task slowly when it is a few tokens
      // in a long document.
      const n = opts.copies ?? 4
      if (!Number.isSafeInteger(n) || n < 1 || n > 64) throw new RangeError(`copies must be in 1..64, got ${n}`)
      const depths = Array.from({ length: 2 * n }, () => rng.float()).sort((a, b) => a - b)
      const inserts = Array.from({ length: n }, (_, i) => {
        const k = String(drawPasskey(rng, opts.keys))
        return [
          { depth: depths[2 * i]!, pieces: [{ text: `\nThe pass key is ${k}.\n` }] },
          { depth: depths[2 * i + 1]!, pieces: [{ text: "\nThe pass key is" }, { text: ` ${k}`, answer: k }, { text: ".\n" }] },
        ]
      }).flat()
      return { head: [], inserts, tail: [] }
    }
    case "needle": {
      const name = randomKeyName(rng)
      const n = String(rng.int(1_000_000, 9_999_999))
      const depth = rng.float()
      return {
        head: [{ text: NEEDLE_INSTRUCTION }],
        inserts: [{ depth, pieces: [{ text: `\nOne of the special magic numbers for ${name} is: ${n}.\n` }] }],
        tail: [
          { text: `\nThe special magic number for ${name} mentioned in the provided text is:` },
          { text: ` ${n}`, answer: n },
          { text: "." },
        ],
      }
    }
    case "kv": {
      const pairs = opts.kvPairs ?? 4
      const queries = Math.min(opts.kvQueries ?? 1, pairs)
      // The name space holds 768 keys; stay well inside it so drawing distinct names ends quickly.
      if (!Number.isSafeInteger(pairs) || pairs < 1 || pairs > 256) throw new RangeError(`kvPairs must be in 1..256, got ${pairs}`)
      if (!Number.isSafeInteger(queries) || queries < 1) throw new RangeError(`kvQueries must be a positive integer, got ${opts.kvQueries}`)
      const names = new Set<string>()
      while (names.size < pairs) names.add(randomKeyName(rng))
      const kv = [...names].map((name) => ({ name, value: String(rng.int(10_000, 99_999)), depth: rng.float() }))
      const asked = rng.shuffle([...kv]).slice(0, queries)
      return {
        head: [{ text: KV_INSTRUCTION }],
        inserts: kv.map((p) => ({ depth: p.depth, pieces: [{ text: `\nThe value of key ${p.name} is ${p.value}.\n` }] })),
        tail: asked.flatMap((p) => [
          { text: `\nWhat is the value of key ${p.name}? The value of key ${p.name} is` },
          { text: ` ${p.value}`, answer: p.value },
          { text: "." },
        ]),
      }
    }
  }
}

/** Appends encoded parts, shifting their answer spans. */
class Builder {
  readonly ids: number[] = []
  readonly texts: string[] = []
  readonly answers: AnswerSpan[] = []
  add(e: Encoded): void {
    for (const a of e.answers) this.answers.push({ answer: a.answer, start: a.start + this.ids.length, end: a.end + this.ids.length })
    for (const x of e.ids) this.ids.push(x)
    this.texts.push(e.text)
  }
  lastChar(): string {
    for (let i = this.texts.length - 1; i >= 0; i--) {
      const t = this.texts[i] as string
      if (t.length > 0) return t.charAt(t.length - 1)
    }
    return "\n"
  }
}

/**
 * Lays a plan out to exactly `length` tokens: whole filler sentences fill each gap up to the fact's depth
 * (so a fact lands at most one sentence early), and the last sentence before the tail is cut to fit
 * (mid-sentence, as the paper's character-cut garbage is).
 */
export const layOut = (tok: TextTokenizer, plan: DocumentPlan, length: number, newGap: () => () => string, task: string) => {
  const head = encodePieces(tok, plan.head, true)
  const tail = encodePieces(tok, plan.tail)
  const inserts = [...plan.inserts].sort((a, b) => a.depth - b.depth).map((i) => ({ depth: i.depth, enc: encodePieces(tok, i.pieces) }))
  const fixed = head.ids.length + tail.ids.length + inserts.reduce((s, i) => s + i.enc.ids.length, 0)
  const fillerTotal = length - fixed
  if (fillerTotal < 0) throw new RangeError(`synthetic ${task} document needs at least ${fixed} tokens, asked for ${length}`)

  const b = new Builder()
  b.add(head)
  let filled = 0
  let pending: Encoded | undefined
  // Each gap starts a fresh filler stream: paper garbage restarts from its first sentence after a fact,
  // as both halves of the §5.2 prompt do.
  let nextSentence = newGap()
  const sentence = (): Encoded => {
    if (pending !== undefined) return pending
    const s = nextSentence()
    pending = encodePieces(tok, [{ text: /\s/.test(b.lastChar()) ? s : ` ${s}` }], b.ids.length === 0)
    return pending
  }
  const depths: number[] = []
  for (const ins of inserts) {
    const target = Math.round(ins.depth * fillerTotal)
    while (filled + sentence().ids.length <= target) {
      const s = sentence()
      b.add(s)
      filled += s.ids.length
      pending = undefined
    }
    depths.push(b.ids.length / length)
    b.add(ins.enc)
    pending = undefined // its leading space was chosen for the previous neighbour
    nextSentence = newGap()
  }
  while (filled < fillerTotal) {
    const s = sentence()
    pending = undefined
    const room = fillerTotal - filled
    if (s.ids.length <= room) {
      b.add(s)
      filled += s.ids.length
    } else {
      const cut = s.ids.slice(0, room)
      b.add({ text: b.ids.length === 0 ? tok.decode(cut) : decodeContinuation(tok, cut), ids: cut, answers: [] })
      filled += room
    }
  }
  b.add(tail)
  return { ids: b.ids, text: b.texts.join(""), answers: b.answers, depths }
}

export const SYNTHETIC_TASKS: readonly SyntheticTask[] = ["passkey", "kv", "needle", "filler", "copy"]
/** The weight of task `t` under `weights`; without weights the four evaluation-like tasks weigh 1 and `copy`, a training drill asked for by name, 0. */
export const taskWeight = (t: SyntheticTask, weights: Partial<Record<SyntheticTask, number>> | undefined): number =>
  weights?.[t] ?? (weights === undefined ? (t === "copy" ? 0 : 1) : 0)

const pickTask = (rng: Rng, weights: Partial<Record<SyntheticTask, number>> | undefined): SyntheticTask => {
  const w = SYNTHETIC_TASKS.map((t) => taskWeight(t, weights))
  if (w.some((x) => !(x >= 0))) throw new RangeError(`task weights must be non-negative, got ${JSON.stringify(weights)}`)
  const total = w.reduce((s, x) => s + x, 0)
  if (total <= 0) throw new RangeError(`no task has a positive weight in ${JSON.stringify(weights)}`)
  let r = rng.float() * total
  for (let i = 0; i < SYNTHETIC_TASKS.length; i++) {
    r -= w[i]!
    if (r < 0) return SYNTHETIC_TASKS[i]!
  }
  // Float rounding left r ≥ 0: take the last task that has weight.
  for (let i = SYNTHETIC_TASKS.length - 1; i >= 0; i--) if (w[i]! > 0) return SYNTHETIC_TASKS[i]!
  throw new Error("unreachable")
}

/** Document `index` of the synthetic corpus defined by `opts`. */
export const syntheticDocument = (opts: SyntheticOptions, index: number): SyntheticDocument => {
  const rng = Rng.seeded(opts.seed, 0x5171, index)
  const length = typeof opts.length === "number" ? opts.length : rng.int(opts.length[0], opts.length[1])
  if (!Number.isSafeInteger(length) || length < 1) throw new RangeError(`document length must be a positive integer, got ${length}`)
  const task = pickTask(rng, opts.tasks)
  const fillerOpt = opts.filler ?? "mixed"
  const filler: FillerKind = fillerOpt === "mixed" ? (rng.float() < 0.5 ? "varied" : "paper") : fillerOpt
  const plan = planFor(task, rng, opts)
  const doc = layOut(opts.tokenizer, plan, length, () => fillerStream(filler, rng), task)
  return { index, task, filler, ...doc }
}

/** The first `count` synthetic documents as token ids, for the packer. */
export const syntheticSource = (opts: SyntheticOptions, count: number): DocumentSource => {
  // The packer asks for a document's tokens and then its answers: make each document once.
  let last: SyntheticDocument | undefined
  const doc = (i: number): SyntheticDocument => (last?.index === i ? last : (last = syntheticDocument(opts, i)))
  return { size: count, tokens: (i) => doc(i).ids, answers: (i) => doc(i).answers }
}

/** The first `count` synthetic documents as text, wherever a Corpus is expected. */
export const syntheticCorpus = (opts: SyntheticOptions, count: number): Corpus => ({
  path: `synthetic(seed=${opts.seed})`,
  size: count,
  text: (i) => syntheticDocument(opts, i).text,
  where: (i) => `synthetic(seed=${opts.seed})#${i}`,
})
