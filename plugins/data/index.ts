/** Data for training and evaluation: tokenizers, corpora, packing, synthetic tasks, evaluation prompts. */
export * from "../../common/rng.ts"
export * from "./tokenizer.ts"
export * from "./corpus.ts"
export * from "./pack.ts"
export * from "./text.ts"
export * from "./synthetic.ts"
export * from "./prompts.ts"
