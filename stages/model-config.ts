/**
 * `model-config` (input `model`): the same folder with config.json fields set (`set: {sliding_window:
 * null}`), for the edits a recipe needs before any stage reads the model (Mistral's window, §2.5), so
 * they live in the workflow, not in the user's copy of the weights.
 */
import { Effect, Schema } from "effect"
import { doc } from "../common/schema.ts"
import { defineStage, type Json } from "../pipeline/workflow/stage.ts"
import { readConfigJson, writeHfFolder } from "../plugins/export/hf.ts"
import { attempt } from "./kit.ts"

export const ModelConfigParams = Schema.Struct({
  set: Schema.Record(Schema.String, Schema.Unknown).pipe(doc("config.json fields to set (null writes null; e.g. { sliding_window: null })")),
})

// Fields that describe the weights: changing them would make the folder unreadable or silently wrong.
const SHAPE_FIELDS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "architectures", "model_type", "tie_word_embeddings"]

export const modelConfigStage = defineStage({
  name: "model-config",
  version: "1",
  description: "the model folder with config.json fields set (weights linked), e.g. { sliding_window: null } for full attention",
  params: ModelConfigParams,
  inputs: { model: "model" },
  outputs: { model: "model" },
  validate: (p) =>
    Object.keys(p.set).filter((k) => SHAPE_FIELDS.includes(k)).map((k) => ({ path: ["set", k], at: "key" as const, message: `"${k}" describes the weights; model-config does not change it` })),
  run: (ctx) =>
    Effect.gen(function* () {
      const changed = yield* attempt("model-config", () => {
        const config = readConfigJson(ctx.inputs.model)
        const out = { ...config, ...ctx.params.set }
        writeHfFolder(ctx.inputs.model, ctx.outputs.model, out)
        return Object.keys(ctx.params.set).filter((k) => JSON.stringify(config[k]) !== JSON.stringify(ctx.params.set[k]))
      })
      yield* ctx.progress.report(1)
      return { changed } satisfies Json
    }),
})
