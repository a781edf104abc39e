/**
 * `finetune` / `finetune-factors`: continue training a model (input `model`, an HF folder) at a RoPE
 * table, with LongRoPE's recipe as the defaults (longrope-method.md §4: AdamW lr 2e-5 with linear decay,
 * warmup 20, clip 1.0, betas (0.9, 0.999), eps 1e-8, weight decay 0; steps and lengths come from params).
 *
 * The table, first found wins:
 *   1. `ropeScaling` (an HF rope_scaling object, e.g. YaRN), replacing the model's;
 *   2. the `factors` input (stage `finetune-factors`): a factor-set file, the search's output;
 *   3. the model's own config.json.
 * The output folder's config.json carries the scaling the model was trained with: the given object, or
 * the factor set as `longrope-research` (default) or HF `longrope` (`scalingFormat: longrope`), and
 * max_position_embeddings raised to what that scaling covers.
 *
 * `mixedContext: true` is LongRoPE2's mixed context window: positions restart per packed document and
 * each document uses the set for its own length (short set ≤ original context, long set beyond); see
 * training/sequences.ts for how one-table-per-call lossAndGrad is grouped per sequence.
 *
 * `positionSkip: { length, chunks? }` is PoSE: sequences stay seqLen tokens but each document's later
 * pieces jump ahead in position, up to `length`, and the document takes the set for its last position + 1
 * (beyond the factor set's last max_length, the last set, as inference picks). It trains positions and
 * distances up to `length` at the cost of seqLen-token sequences (training/sequences.ts `skipPositions`).
 *
 * Two stage names, one implementation, as `search`/`search-factors`: a workflow wires every input a
 * stage declares.
 */
import { Effect, Schema } from "effect"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { inputError, TokenizerMismatch } from "../common/errors.ts"
import { defineStage, type Json, type StageContext } from "../pipeline/workflow/stage.ts"
import { trainingData } from "../plugins/data/training.ts"
import { inspectModel } from "../plugins/models/registry.ts"
import { checkCoverage, ropeCoverage } from "../plugins/rope/coverage.ts"
import { chooseRope, outputConfig } from "../plugins/rope/finetune-rope.ts"
import { ropeSpecFromConfig } from "../plugins/rope/formats.ts"
import { resolveRope } from "../plugins/rope/index.ts"
import { checkpointing, optimizerAndSchedule, type TrainDefaults } from "../training/config.ts"
import { positionSkipOf } from "../training/sequences.ts"
import { attempt, corpusPath, fail, inputPath, modelFamilies, openTokenizer } from "./kit.ts"
import { finishTraining, runTraining, summary, TOKENIZER_FILES, TRAIN_FIELDS, writeTrainedFolder } from "./train-common.ts"

export const FinetuneParams = Schema.Struct({
  ...TRAIN_FIELDS,
  /** An HF rope_scaling object to train at (and write), replacing the model's and any `factors` input. */
  ropeScaling: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown)),
  /** How a factor set is written into config.json: ropeway's "longrope-research" (default) or HF "longrope". */
  scalingFormat: Schema.optionalKey(Schema.Literals(["longrope-research", "longrope"])),
})
export type FinetuneParams = typeof FinetuneParams.Type

/** LongRoPE's fine-tuning recipe (§4). */
export const FINETUNE_DEFAULTS: TrainDefaults = {
  lr: 2e-5, schedule: "linear", warmup: 20, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, clip: 1, mixedContext: false,
}

export const FINETUNE_VERSION = "1"

const STAGE = "finetune"

/** The model (through its family), the table to train at, the data, optimizer, schedule and output config. */
function setUp(ctx: StageContext<FinetuneParams, string, "model">, modelDir: string) {
  return Effect.gen(function* () {
    const p = ctx.params
    const families = yield* modelFamilies
    return yield* attempt(STAGE, () => {
      const configFile = join(modelDir, "config.json")
      const raw = JSON.parse(readFileSync(configFile, "utf8")) as Record<string, unknown>
      const choice = chooseRope(p, raw, configFile, inputPath(ctx, "factors"), (f) => readFileSync(f, "utf8"))
      const { family, model } = inspectModel(families, modelDir, { ropeScaling: choice.scaling ?? null })
      const config = model.config
      const spec = choice.scaling === undefined ? config.rope : ropeSpecFromConfig(raw, configFile, { scaling: choice.scaling, key: choice.source })
      const tableFor = resolveRope(spec, choice.source)
      const seqLen = p.seqLen ?? ropeCoverage(spec).length
      checkCoverage(STAGE, seqLen, spec, "give a factor set (stage finetune-factors) or a ropeScaling whose range covers it, or lower seqLen")
      tableFor(seqLen) // a bad scaling fails now, naming its source
      const tokenizer = openTokenizer(p.tokenizer, modelDir)
      if (tokenizer.vocabSize > config.vocabSize) {
        throw new TokenizerMismatch({ message: `${STAGE}.tokenizer: ${tokenizer.name} has ${tokenizer.vocabSize} ids but the model's vocab_size is ${config.vocabSize}`, tokenizerVocab: tokenizer.vocabSize, modelVocab: config.vocabSize })
      }
      const { optimizer, schedule } = optimizerAndSchedule(STAGE, p, FINETUNE_DEFAULTS)
      const data = trainingData(STAGE, p.data, tokenizer, seqLen, ctx.seed)
      const positionSkip = positionSkipOf(STAGE, p.positionSkip, seqLen)
      return { family, config, tableFor, seqLen, tokenizer, optimizer, schedule, data, out: outputConfig(raw, choice, spec, seqLen), choice, positionSkip }
    })
  })
}

export function runFinetune(ctx: StageContext<FinetuneParams, string, "model">) {
  return Effect.gen(function* () {
    const p = ctx.params
    const modelDir = inputPath(ctx, "model")
    if (modelDir === undefined) return yield* fail(`${STAGE}: input \`model\` (a Hugging Face model folder) is required`)
    const s = yield* setUp(ctx, modelDir)
    const batch = p.batch ?? 1
    const mixed = p.mixedContext ?? FINETUNE_DEFAULTS.mixedContext
    const runConfig: Json = { stage: STAGE, seed: ctx.seed, params: p as unknown as Json, rope: s.choice.recorded }
    yield* ctx.progress.log(`${STAGE}: RoPE from ${s.choice.source}${mixed ? ", mixed context window" : ""}`)
    const result = yield* runTraining(ctx as StageContext<unknown, string, string>, {
      stage: STAGE, family: s.family, config: s.config, weights: modelDir, tableFor: s.tableFor, seqLen: s.seqLen, mixed, positionSkip: s.positionSkip,
      data: s.data, tokenizer: s.tokenizer, optimizer: s.optimizer, schedule: s.schedule, steps: p.steps, batch, ...checkpointing(p), runConfig,
      writeOutput: async (model) => {
        const dir = ctx.outputs.model
        await writeTrainedFolder(dir, model, `finetune, ${p.steps} steps at ${s.seqLen}, seed ${ctx.seed}`, s.out, modelDir, [...TOKENIZER_FILES, "generation_config.json"])
        // What we wrote must load and give the table we trained with at seqLen.
        resolveRope(s.family.inspect(dir).config.rope)(s.seqLen)
      },
    })
    yield* finishTraining(ctx as StageContext<unknown, string, string>, STAGE, { ...(runConfig as Record<string, Json>), seqLen: s.seqLen, batch, mixedContext: mixed }, result)
    return summary(result)
  }).pipe(Effect.scoped)
}

const stageDef = {
  version: FINETUNE_VERSION,
  params: FinetuneParams,
  outputs: { model: "model" },
  run: (ctx: StageContext<FinetuneParams, string, "model">) => runFinetune(ctx),
  paths: corpusPath,
} as const

/** `finetune`: the model at its own RoPE settings or at `ropeScaling`. */
export const finetuneStage = defineStage({
  ...stageDef,
  name: "finetune",
  description: "fine-tune a model at a RoPE table (LongRoPE's recipe as defaults; optional mixed context window, PoSE position skips)",
  inputs: { model: "model" },
})

/** `finetune-factors`: the same at a factor set (the search's `factors` output). */
export const finetuneFactorsStage = defineStage({
  ...stageDef,
  name: "finetune-factors",
  description: "fine-tune a model at a searched factor set (LongRoPE's recipe as defaults; optional mixed context window, PoSE position skips)",
  inputs: { model: "model", factors: "rope-factors" },
})
