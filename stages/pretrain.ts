/**
 * `pretrain`: a llama-family model from scratch. Deterministic random init (plugins/models/llama/random.ts,
 * from the step's seed), then AdamW on packed documents (synthetic by default: filler with passkeys,
 * key–value recall and needles, each document inside the window) with plain RoPE at the original context.
 * Writes the model as a Hugging Face folder (config.json + model.safetensors, F32) plus
 * ropeway_training.json (hyper-parameters and the loss curve).
 *
 * Resumes exactly from the newest training checkpoint in the step's checkpoint folder (see
 * stages/train-common.ts); interruption lands between updates.
 */
import { Effect, Schema } from "effect"
import { inputError } from "../common/errors.ts"
import { defineStage, type Json, type StageContext } from "../pipeline/workflow/stage.ts"
import { loadTokenizer } from "../plugins/data/tokenizer.ts"
import { parseLlamaConfig } from "../plugins/models/llama/config.ts"
import { type RandomLlamaOptions, randomLlamaConfig, randomLlamaTensors } from "../plugins/models/llama/random.ts"
import { resolveRope } from "../plugins/rope/index.ts"
import {
  asStageError, checkCoverage, checkpointing, finishTraining, optimizerAndSchedule, PosInt, positionSkipOf, resolveTrainData, runTraining, TRAIN_FIELDS, writeTrainedFolder, type TrainDefaults, type TrainParams,
} from "./train-common.ts"
import { corpusPath } from "./kit.ts"

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

/** Files of an HF tokenizer folder carried into the model folder. */
export const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"]

export function runPretrain(ctx: StageContext<PretrainParams, never, "model">) {
  return Effect.gen(function* () {
    const p = ctx.params
    const stage = "pretrain"
    const setup = yield* Effect.try({
      try: () => {
        const tokenizer = loadTokenizer(p.tokenizer ?? "byte")
        const vocab = p.vocab ?? tokenizer.vocabSize
        if (vocab < tokenizer.vocabSize) throw inputError(`${stage}.vocab`, `${vocab} is smaller than the tokenizer's ${tokenizer.vocabSize} ids (${tokenizer.name})`)
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
          seed: ctx.seed,
        }
        if (shape.hidden % shape.heads !== 0) throw inputError(`${stage}.hidden`, `${shape.hidden} is not a multiple of heads (${shape.heads})`)
        if (shape.heads % (shape.kvHeads ?? shape.heads) !== 0) throw inputError(`${stage}.kvHeads`, `heads (${shape.heads}) must be a multiple of kvHeads (${shape.kvHeads})`)
        if ((shape.hidden / shape.heads) % 2 !== 0) throw inputError(`${stage}.hidden`, `head dim ${shape.hidden / shape.heads} must be even (RoPE rotates pairs)`)
        const configJson = randomLlamaConfig(shape)
        const config = parseLlamaConfig(configJson, `${stage} (model shape params)`, ctx.outputs.model)
        const seqLen = p.seqLen ?? shape.maxPositions
        checkCoverage(stage, seqLen, config.rope, `lower seqLen or raise context (${shape.maxPositions})`)
        const { optimizer, schedule } = optimizerAndSchedule(stage, p as TrainParams, PRETRAIN_DEFAULTS)
        const data = resolveTrainData(stage, p.data, tokenizer, seqLen, ctx.seed)
        const weights = new Map(randomLlamaTensors(shape).map((t) => [t.name, t.data as Float32Array]))
        const positionSkip = positionSkipOf(stage, p as TrainParams, seqLen)
        return { tokenizer, shape, configJson, config, seqLen, optimizer, schedule, data, weights, positionSkip }
      },
      catch: (e) => asStageError(e, stage),
    })
    const batch = p.batch ?? 1
    const runConfig: Json = { stage, seed: ctx.seed, params: p as unknown as Json }
    const result = yield* runTraining(ctx as StageContext<unknown, string, string>, {
      stage,
      config: setup.config,
      weights: setup.weights,
      tableFor: resolveRope(setup.config.rope),
      seqLen: setup.seqLen,
      mixed: p.mixedContext ?? PRETRAIN_DEFAULTS.mixedContext,
      positionSkip: setup.positionSkip,
      data: setup.data,
      tokenizer: setup.tokenizer,
      optimizer: setup.optimizer,
      schedule: setup.schedule,
      steps: p.steps,
      batch,
      ...checkpointing(p),
      runConfig,
      writeOutput: async (model) => {
        const tokDir = p.tokenizer !== undefined && p.tokenizer !== "byte" ? p.tokenizer : undefined
        await writeTrainedFolder(ctx.outputs.model, model, `pretrain, ${p.steps} steps, seed ${ctx.seed}`, setup.configJson, tokDir, TOKENIZER_FILES)
      },
    })
    yield* finishTraining(ctx as StageContext<unknown, string, string>, stage, { ...(runConfig as Record<string, Json>), seqLen: setup.seqLen, batch }, result)
    return summary(result)
  }).pipe(Effect.scoped)
}


/** The stage's JSON result: the loss at the start and end (and every tenth step), tokens and speed. */
export function summary(r: { steps: number; resumedAt: number; losses: readonly number[]; tokens: number; seconds: number; tokensPerSecond: number }): Json {
  const every = Math.max(1, Math.ceil(r.losses.length / 10))
  const curve = r.losses.map((l, i) => [i + 1, Number.isFinite(l) ? l : null] as const).filter(([s]) => s === 1 || s % every === 0 || s === r.losses.length)
  return {
    steps: r.steps, resumedAt: r.resumedAt,
    firstLoss: Number.isFinite(r.losses[0] ?? NaN) ? r.losses[0]! : null,
    finalLoss: Number.isFinite(r.losses.at(-1) ?? NaN) ? r.losses.at(-1)! : null,
    lossCurve: curve.map(([s, l]) => [s, l]),
    tokens: r.tokens, seconds: r.seconds, tokensPerSecond: r.tokensPerSecond,
  }
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
