/**
 * Evaluation inputs: the paper's passkey prompt (§5.2) sized to a token budget, with depth control for a
 * length × depth grid; and LongRoPE2's needle-driven sample (§5.4) on any document's token stream, with
 * labels on the answer tokens only.
 */
import { inputError } from "../../common/errors.ts"
import { Rng } from "../../common/rng.ts"
import { NEEDLE_INSTRUCTION, PASSKEY_TASK } from "./synthetic.ts"
import { type AnswerSpan, PAPER_GARBAGE, encodeContinuation, encodePieces, paperGarbage } from "./text.ts"
import { type TextTokenizer, withBos } from "./tokenizer.ts"

export const PASSKEY_QUESTION = "What is the pass key? The pass key is"
export const passkeyInfoLine = (key: number): string => `The pass key is ${key}. Remember it. ${key} is the pass key.`

/** The §5.2 prompt text for a garbage size in characters and a prefix share of it. */
export const passkeyText = (key: number, garbageChars: number, depth: number): { text: string; prefixChars: number } => {
  const prefixChars = Math.floor(depth * garbageChars) // int(percent * n_garbage), as the reference scripts do
  // Prefix and suffix are both taken from the start of the repeated garbage.
  const lines = [PASSKEY_TASK, paperGarbage(prefixChars), passkeyInfoLine(key), paperGarbage(garbageChars - prefixChars), PASSKEY_QUESTION]
  return { text: lines.join("\n"), prefixChars }
}

export interface PasskeyOptions {
  readonly tokenizer: TextTokenizer
  /** The tokenized prompt (with BOS) has fewer tokens than this. */
  readonly targetTokens: number
  /** Draws K (uniform 1..50000) and, when `depth` is not given, the split point (uniform). */
  readonly rng: Rng
  /** Where the info line goes, as the share of the garbage before it (0 = right after the task line). */
  readonly depth?: number
  /** Garbage size granularity of the search, in characters; default 1 (the internal script used 1024). */
  readonly charStep?: number
}

export interface PasskeyPrompt {
  readonly text: string
  /** Token ids with BOS (if the tokenizer has one); length < targetTokens. */
  readonly ids: number[]
  readonly key: number
  /** The expected answer: String(key). */
  readonly answer: string
  /** Requested depth (share of the garbage before the info line). */
  readonly depth: number
  readonly garbageChars: number
  /** Token index where the info line starts, and that index as a fraction of the prompt length. */
  readonly infoToken: number
  readonly infoDepth: number
}

/**
 * The largest prompt (by garbage characters, in steps of `charStep`) whose token count stays below
 * `targetTokens`. Token count is monotone in the garbage size up to tokenizer noise, so a binary search
 * (in a bracket around a linear estimate) finds it; the result fits by construction.
 */
export const passkeyPrompt = (opts: PasskeyOptions): PasskeyPrompt => {
  const { tokenizer: tok, targetTokens, rng } = opts
  const step = opts.charStep ?? 1
  if (!Number.isSafeInteger(step) || step < 1) throw new RangeError(`charStep must be a positive integer, got ${step}`)
  const depth = opts.depth ?? rng.float()
  if (!(depth >= 0 && depth <= 1)) throw new RangeError(`passkey depth must be in [0, 1], got ${depth}`)
  const key = rng.int(1, 50000)
  const count = (units: number): number => withBos(tok, tok.encode(passkeyText(key, units * step, depth).text)).length
  const fits = (units: number): boolean => count(units) < targetTokens
  if (!fits(0)) throw new RangeError(`a passkey prompt needs at least ${count(0) + 1} target tokens, got ${targetTokens}`)
  // Bracket lo (fits) and hi (does not) around a linear estimate: the garbage is periodic, so the token
  // count is linear in its size up to a period or so, and a narrow bracket saves most of the (costly, at
  // 128k tokens) encodes a blind binary search would make.
  const c0 = count(0)
  const probe = Math.max(1, Math.ceil((2 * (targetTokens - c0)) / step))
  const perUnit = Math.max(1e-9, (count(probe) - c0) / probe)
  const estimate = Math.max(0, Math.floor((targetTokens - 1 - c0) / perUnit))
  let margin = Math.ceil((3 * (PAPER_GARBAGE.length + 1)) / step) + 1
  let lo = Math.max(0, estimate - margin)
  while (lo > 0 && !fits(lo)) lo = Math.max(0, lo - (margin *= 2))
  let hi = estimate + margin
  while (fits(hi)) {
    lo = hi
    hi += margin *= 2
  }
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2)
    if (fits(mid)) lo = mid
    else hi = mid
  }
  const garbageChars = lo * step
  const { text, prefixChars } = passkeyText(key, garbageChars, depth)
  const ids = withBos(tok, tok.encode(text))
  const before = `${PASSKEY_TASK}\n${paperGarbage(prefixChars)}\n`
  const infoToken = withBos(tok, tok.encode(before)).length
  return { text, ids, key, answer: String(key), depth, garbageChars, infoToken, infoDepth: infoToken / ids.length }
}

// ---------------------------------------------------------------------------------------------------
// LongRoPE2 needle-driven samples

export const NEEDLE_KEY = "wandering-age"
export const needleSentence = (key: string, n: string): string => `One of the special magic numbers for ${key} is: ${n}.\n`
export const needleQuestion = (key: string): string => `The special magic number for ${key} mentioned in the provided text is:`

export interface NeedleOptions {
  readonly tokenizer: TextTokenizer
  /** The document's tokens (no BOS), at least as long as the sample's body. */
  readonly document: readonly number[]
  /** Total sample length in tokens (BOS included). */
  readonly seqLen: number
  /** Draws the 7-digit number. */
  readonly rng: Rng
  /** Where the needle goes, as a fraction of the body; or `cut`, an exact token index (e.g. SEQLEN·(i+10j)/99). */
  readonly depth?: number
  readonly cut?: number
  /** Move the cut to the nearest token that ends a line (as the reference does); default true. */
  readonly snap?: boolean
  /** How far to look for a line end, in tokens; default 512. */
  readonly snapWindow?: number
  readonly key?: string
}

export interface NeedleSample {
  /** seqLen ids: BOS, instruction, front, needle, back, question, answer. */
  readonly ids: Int32Array
  /** HF-style (unshifted) labels: the token id at answer positions, −100 elsewhere. */
  readonly labels: Int32Array
  readonly answer: string
  readonly answerSpan: AnswerSpan
  /** Token index of the cut in the document, and where the needle starts in the sample. */
  readonly cut: number
  readonly needleStart: number
}

export const IGNORE_LABEL = -100

export const needleSample = (opts: NeedleOptions): NeedleSample => {
  const { tokenizer: tok, document: doc, seqLen, rng } = opts
  const key = opts.key ?? NEEDLE_KEY
  const n = String(rng.int(1_000_000, 9_999_999))
  const bos = withBos(tok, [])
  // The instruction opens the text; the rest follows other text (see encodeContinuation).
  const instr = tok.encode(NEEDLE_INSTRUCTION)
  const needle = encodeContinuation(tok, needleSentence(key, n))
  const qa = encodePieces(tok, [{ text: needleQuestion(key) }, { text: ` ${n}`, answer: n }])
  const body = seqLen - bos.length - instr.length - needle.length - qa.ids.length
  if (body < 0) throw new RangeError(`a needle sample needs more than ${seqLen} tokens`)
  if (doc.length < body) throw inputError("needle document", `has ${doc.length} tokens; a ${seqLen}-token sample needs ${body}`)

  let cut: number
  if (opts.cut !== undefined) cut = opts.cut
  else {
    const depth = opts.depth ?? rng.float()
    if (!(depth >= 0 && depth <= 1)) throw new RangeError(`needle depth must be in [0, 1], got ${depth}`)
    cut = Math.round(depth * body)
  }
  if (!Number.isSafeInteger(cut) || cut < 0 || cut > body) throw new RangeError(`needle cut ${cut} outside the body [0, ${body}]`)
  if (opts.snap ?? true) cut = snapToLineEnd(tok, doc, cut, body, opts.snapWindow ?? 512)

  const ids = new Int32Array(seqLen)
  let at = 0
  const put = (xs: ArrayLike<number>): void => {
    for (let i = 0; i < xs.length; i++) ids[at++] = xs[i] as number
  }
  put(bos)
  put(instr)
  put(doc.slice(0, cut))
  const needleStart = at
  put(needle)
  put(doc.slice(cut, body))
  const qaStart = at
  put(qa.ids)
  const span = qa.answers[0] as AnswerSpan
  const answerSpan = { answer: n, start: qaStart + span.start, end: qaStart + span.end }
  const labels = new Int32Array(seqLen).fill(IGNORE_LABEL)
  for (let i = answerSpan.start; i < answerSpan.end; i++) labels[i] = ids[i] as number
  return { ids, labels, answer: n, answerSpan, cut, needleStart }
}

/** The boundary nearest `cut` (within `window`, inside [0, body]) that follows a token ending in a newline. */
const snapToLineEnd = (tok: TextTokenizer, doc: readonly number[], cut: number, body: number, window: number): number => {
  const endsLine = (b: number): boolean => b === 0 || (b <= body && tok.decode([doc[b - 1] as number]).endsWith("\n"))
  for (let d = 0; d <= window; d++) {
    if (cut - d >= 0 && endsLine(cut - d)) return cut - d
    if (cut + d <= body && endsLine(cut + d)) return cut + d
  }
  return cut
}
