/** Runs `ropeway …` (cli/main.ts) as a user would, under the runtime running the tests, for the CLI tests. */
import { entryCommand, ROOT, type RunResult, runToEnd } from "../runtime.ts"

export { ROOT }
export type CliResult = RunResult

export const runCli = (args: readonly string[]): Promise<CliResult> => runToEnd(entryCommand("cli/main.ts", ...args))

/** stderr without Dawn's adapter-limit warnings, which are not ours to print or suppress. */
export const ownStderr = (stderr: string): string =>
  stderr
    .split("\n")
    .filter((l) => l.trim() !== "" && !l.startsWith("Warning: max"))
    .join("\n")

/** A tiny BPE tokenizer.json (BOS `<s>` = 0 added by its post-processor) for `--text`. */
export const TINY_TOKENIZER = {
  version: "1.0",
  added_tokens: [{ id: 0, content: "<s>", special: true, single_word: false, lstrip: false, rstrip: false, normalized: false }],
  normalizer: null,
  pre_tokenizer: { type: "Whitespace" },
  post_processor: {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [],
    special_tokens: { "<s>": { id: "<s>", ids: [0], tokens: ["<s>"] } },
  },
  decoder: null,
  model: {
    type: "BPE",
    dropout: null,
    unk_token: "<unk>",
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    vocab: { "<s>": 0, "<unk>": 1, h: 2, e: 3, l: 4, o: 5, w: 6, r: 7, d: 8, he: 9, ll: 10, hell: 11, hello: 12 },
    merges: ["h e", "l l", "he ll", "hell o"],
  },
}
