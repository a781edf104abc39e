/** Runs `bun cli/main.ts …` as a user would, for the CLI tests. */
import { resolve } from "node:path"

export const ROOT = resolve(import.meta.dir, "../..")

export interface CliResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

export async function runCli(args: readonly string[]): Promise<CliResult> {
  const proc = Bun.spawn([resolve(ROOT, "node_modules/.bin/bun"), "cli/main.ts", ...args], {
    cwd: ROOT,
    env: { ...process.env, EGL_PLATFORM: "surfaceless" },
    stdout: "pipe",
    stderr: "pipe",
  })
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  return { code, stdout, stderr }
}

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
