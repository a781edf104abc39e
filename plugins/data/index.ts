/** Data for training and evaluation: tokenizers, corpora, packing, synthetic tasks, evaluation prompts. */
export * from "../../common/rng.ts"
export * from "./tokenizer.ts"
export * from "./corpus.ts"
export * from "./pack.ts"
export * from "./text.ts"
export * from "./synthetic.ts"
export * from "./prompts.ts"

/** The data sources every built-in stage's `data:` takes, as the built-in plugin lists them. */
export const BUILTIN_DATASETS = [
  {
    name: "synthetic",
    description: "seeded synthetic long-range documents (filler with passkeys, key-value pairs, needles) of an exact token length; no download",
    params: "data: { source: synthetic }; tokens, seed, samples on the stage",
  },
  {
    name: "corpus",
    description: "a folder of .txt / .jsonl documents or one such file, tokenized with `byte` or an HF tokenizer.json folder",
    params: "data: { source: corpus, path, field? }; tokenizer on the stage",
  },
] as const
