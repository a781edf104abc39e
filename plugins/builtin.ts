/**
 * The built-in plugin: ropeway's own stages, models and datasets, contributed through the same
 * `definePlugin` a user's plugin uses (RoPE methods register themselves in plugins/rope; search
 * strategies in plugins/search).
 */
import { definePlugin } from "../pipeline/workflow/plugin.ts"
import { evaluateStage } from "../stages/evaluate.ts"
import { tinyModel } from "./models/tiny/tiny.ts"

export const builtinPlugin = definePlugin({
  name: "ropeway",
  version: "0.1.0",
  description: "ropeway's built-in stages, models and datasets",
  stages: [evaluateStage],
  models: [tinyModel],
  datasets: [
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
  ],
})
