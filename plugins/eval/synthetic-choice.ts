/**
 * A built-in multiple-choice task that needs no download and that the tiny byte-level model can do, so a
 * workflow can report short-context ability (base vs extended model at the original length) without
 * external data:
 *
 *   passkey-choice   the §5.2 passkey prompt (plugins/data passkeyPrompt) at a short length, ending
 *                    "... The pass key is"; the choices are the key and distractor keys drawn the same way
 *                    (uniform 1..50000, so digit count does not give the answer away), in random order.
 *
 * Item i depends only on (seed, split, i). The "train" split is a disjoint stream for few-shot examples.
 */
import { passkeyPrompt } from "../data/prompts.ts"
import { Rng } from "../../common/rng.ts"
import type { TextTokenizer } from "../data/tokenizer.ts"
import type { ChoiceItem } from "./multiple-choice.ts"

export const SYNTHETIC_CHOICE_STREAM = 0xc401

export interface PasskeyChoiceOptions {
  readonly tokenizer: TextTokenizer
  readonly seed: number
  readonly count: number
  /** The prompt (BOS included) has fewer tokens than this (default 300). */
  readonly length?: number
  /** Choices per item, the key included (default 4). */
  readonly choices?: number
  readonly split?: "test" | "train"
}

export function passkeyChoiceItems(opts: PasskeyChoiceOptions): ChoiceItem[] {
  const n = opts.choices ?? 4
  if (!Number.isSafeInteger(n) || n < 2 || n > 16) throw new RangeError(`passkey-choice: choices must be an integer in 2..16, got ${n}`)
  const split = opts.split ?? "test"
  return Array.from({ length: opts.count }, (_, i) => {
    const rng = Rng.seeded(opts.seed, SYNTHETIC_CHOICE_STREAM, split === "test" ? 0 : 1, i)
    const p = passkeyPrompt({ tokenizer: opts.tokenizer, targetTokens: opts.length ?? 300, rng })
    const keys = new Set([p.key])
    while (keys.size < n) keys.add(rng.int(1, 50000))
    const choices = rng.shuffle([...keys].map(String))
    return { id: `passkey-choice(seed=${opts.seed},${split})#${i}`, context: p.text, choices, gold: choices.indexOf(p.answer) }
  })
}
