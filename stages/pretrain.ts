/**
 * `pretrain`: a llama-family model from scratch. Deterministic random init (plugins/models/llama/random.ts,
 * from the step's seed), then AdamW on packed documents (synthetic by default: filler with passkeys,
 * key–value recall and needles, each document inside the window) with plain RoPE at the original context.
 * Writes the model as a Hugging Face folder (config.json + model.safetensors, F32) plus
 * ropeway_training.json (hyper-parameters and the loss curve).
 *
 * Resumes exactly from the newest training checkpoint in the step's checkpoint folder (see
 * stages/train-common.ts); interruption lands between updates. The model is the llama family's
 * (through the registry), the only built-in family with a random init.
 */
import { Effect, Schema } from "effect"
import { inputError } from "../common/errors.ts"
import { PosInt } from "../common/schema.ts"
import { defineStage, type Json, type StageContext } from "../pipeline/workflow/stage.ts"
import { trainingData } from "../plugins/data/training.ts"
import { loadTokenizer } from "../plugins/data/tokenizer.ts"
import { type RandomLlamaOptions, randomLlamaConfig, randomLlamaTensors } from "../plugins/models/llama/random.ts"
import { familyNamed } from "../plugins/models/registry.ts"
import { checkCoverage } from "../plugins/rope/coverage.ts"
import { resolveRope } from "../plugins/rope/index.ts"
import { checkpointing, optimizerAndSchedule, type TrainDefaults } from "../training/config.ts"
import { positionSkipOf } from "../training/sequences.ts"
import { attempt, corpusPath, modelFamilies } from "./kit.ts"
import { finishTraining, runTraining, summary, TOKENIZER_FILES, TRAIN_FIELDS, writeTrainedFolder } from "./train-common.ts"

export const PretrainParams = Schema.Struct({
  ...TRAIN_FIELDS,
  /** Vocabulary size; default the tokenizer's (258 for "byte"). */
  vocab: Schema.optionalKey(PosInt),
  layers: Schema.optionalKey(PosInt),
  hidden: Schema.optionalKey(PosInt),
  heads: Schema.optionalKey(PosInt),
  kvHeads: Schema.optionalKey(PosInt),
  intermediate: Schema.optionalKey(PosInt),
  /** The original context: max_position_embeddings of the model written. */
  context: Schema.optionalKey(PosInt),
  ropeTheta: Schema.optionalKey(Schema.Finite.check(Schema.isGreaterThan(1))),
  tied: Schema.optionalKey(Schema.Boolean),
})
export type PretrainParams = typeof PretrainParams.Type

/** The default shape: the built-in `tiny` (byte-level, 4 layers, hidden 128, 4 heads / 2 KV, context 256). */
export const PRETRAIN_SHAPE = { layers: 4, hidden: 128, heads: 4, kvHeads: 2, intermediate: 384, context: 256, ropeTheta: 10000, tied: false } as const

/** From-scratch defaults (GPT/LLaMA-style small-model pre-training). */
export const PRETRAIN_DEFAULTS: TrainDefaults = {
  lr: 1e-3, schedule: "cosine", warmup: 100, weightDecay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, clip: 1, mixedContext: true,
}

export const PRETRAIN_VERSION = "1"

const STAGE = "pretrain"

/** The model's shape from params and defaults, checked where heads must divide evenly. */
function shapeOf(p: PretrainParams, tokenizer: ReturnType<typeof loadTokenizer>, seed: number): RandomLlamaOptions {
  const vocab = p.vocab ?? tokenizer.vocabSize
  if (vocab < tokenizer.vocabSize) throw inputError(`${STAGE}.vocab`, `${vocab} is smaller than the tokenizer's ${tokenizer.vocabSize} ids (${tokenizer.name})`)
  const shape: RandomLlamaOptions = {
    vocab,
    hidden: p.hidden ?? PRETRAIN_SHAPE.hidden,
    layers: p.layers ?? PRETRAIN_SHAPE.layers,
    heads: p.heads ?? PRETRAIN_SHAPE.heads,
    kvHeads: p.kvHeads ?? p.heads ?? PRETRAIN_SHAPE.kvHeads,
    intermediate: p.intermediate ?? PRETRAIN_SHAPE.intermediate,
    maxPositions: p.context ?? PRETRAIN_SHAPE.context,
    ropeTheta: p.ropeTheta ?? PRETRAIN_SHAPE.ropeTheta,
    tied: p.tied ?? PRETRAIN_SHAPE.tied,
    ...(tokenizer.bos === undefined ? {} : { bosTokenId: tokenizer.bos }),
    ...(tokenizer.eos === undefined ? {} : { eosTokenId: tokenizer.eos }),
    seed,
  }
  if (shape.hidden % shape.heads !== 0) throw inputError(`${STAGE}.hidden`, `${shape.hidden} is not a multiple of heads (${shape.heads})`)
  if (shape.heads % (shape.kvHeads ?? shape.heads) !== 0) throw inputError(`${STAGE}.kvHeads`, `heads (${shape.heads}) must be a multiple of kvHeads (${shape.kvHeads})`)
  if ((shape.hidden / shape.heads) % 2 !== 0) throw inputError(`${STAGE}.hidden`, `head dim ${shape.hidden / shape.heads} must be even (RoPE rotates pairs)`)
  return shape
}

function setUp(ctx: StageContext<PretrainParams, never, "model">) {
  return Effect.gen(function* () {
    const p = ctx.params
    const family = familyNamed(yield* modelFamilies, "llama", STAGE)
    return yield* attempt(STAGE, () => {
      const tokenizer = loadTokenizer(p.tokenizer ?? "byte")
      const shape = shapeOf(p, tokenizer, ctx.seed)
      const configJson = randomLlamaConfig(shape)
      const config = family.parseConfig!(configJson, `${STAGE} (model shape params)`, ctx.outputs.model)
      const seqLen = p.seqLen ?? shape.maxPositions
      checkCoverage(STAGE, seqLen, config.rope, `lower seqLen or raise context (${shape.maxPositions})`)
      const { optimizer, schedule } = optimizerAndSchedule(STAGE, p, PRETRAIN_DEFAULTS)
      const data = trainingData(STAGE, p.data, tokenizer, seqLen, ctx.seed)
      const weights = new Map(randomLlamaTensors(shape).map((t) => [t.name, t.data as Float32Array]))
      return { family, tokenizer, shape, configJson, config, seqLen, optimizer, schedule, data, weights, positionSkip: positionSkipOf(STAGE, p.positionSkip, seqLen) }
    })
  })
}

export function runPretrain(ctx: StageContext<PretrainParams, never, "model">) {
  return Effect.gen(function* () {
    const p = ctx.params
    const s = yield* setUp(ctx)
    const batch = p.batch ?? 1
    const runConfig: Json = { stage: STAGE, seed: ctx.seed, params: p as unknown as Json }
    const result = yield* runTraining(ctx as StageContext<unknown, string, string>, {
      stage: STAGE, family: s.family, config: s.config, weights: s.weights, tableFor: resolveRope(s.config.rope), seqLen: s.seqLen,
      mixed: p.mixedContext ?? PRETRAIN_DEFAULTS.mixedContext, positionSkip: s.positionSkip, data: s.data, tokenizer: s.tokenizer,
      optimizer: s.optimizer, schedule: s.schedule, steps: p.steps, batch, ...checkpointing(p), runConfig,
      writeOutput: async (model) => {
        const tokDir = p.tokenizer !== undefined && p.tokenizer !== "byte" ? p.tokenizer : undefined
        await writeTrainedFolder(ctx.outputs.model, model, `pretrain, ${p.steps} steps, seed ${ctx.seed}`, s.configJson, tokDir, TOKENIZER_FILES)
      },
    })
    yield* finishTraining(ctx as StageContext<unknown, string, string>, STAGE, { ...(runConfig as Record<string, Json>), seqLen: s.seqLen, batch }, result)
    return summary(result)
  }).pipe(Effect.scoped)
}

export const pretrainStage = defineStage({
  name: "pretrain",
  version: PRETRAIN_VERSION,
  description: "pre-train a llama-family model from deterministic random init (byte-level synthetic corpus by default)",
  params: PretrainParams,
  outputs: { model: "model" },
  run: (ctx) => runPretrain(ctx),
  paths: corpusPath,
})
