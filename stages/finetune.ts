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
 * `lora: { rank, alpha, dropout, targets, trainNorms, trainEmbeddings }` trains LoRA adapters instead of
 * every weight (LongLoRA's defaults: rank 8, alpha 16, dropout 0.05, q/k/v/o; LongLoRA's "+" recipe also
 * trains the norms and the input embeddings). Optimizer state exists only for what trains, checkpoints
 * hold only that, and the output folder is the base's weights (linked) with the adapter beside them in
 * PEFT's layout, which every stage reads as the adapted model; `export-model` writes it merged, or the
 * adapter alone.
 *
 * Two stage names, one implementation, as `search`/`search-factors`: a workflow wires every input a
 * stage declares.
 */
import { Effect, Schema } from "effect"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { inputError, TokenizerMismatch } from "../common/errors.ts"
import { doc, PosInt } from "../common/schema.ts"
import type { LoraSpec } from "../training/model.ts"
import { ADAPTER_CONFIG } from "../training/peft.ts"
import { defineStage, type Json, type StageContext } from "../pipeline/workflow/stage.ts"
import { trainingData } from "../plugins/data/training.ts"
import { inspectModel } from "../plugins/models/registry.ts"
import { checkCoverage, ropeCoverage } from "../plugins/rope/coverage.ts"
import { chooseRope, outputConfig } from "../plugins/rope/finetune-rope.ts"
import { ropeSpecFromConfig } from "../plugins/rope/formats.ts"
import { resolveRope } from "../plugins/rope/index.ts"
import type { ModelConfig, ModelFamily } from "../plugins/models/family.ts"
import { checkpointing, optimizerAndSchedule, type TrainDefaults } from "../training/config.ts"
import { positionSkipOf } from "../training/sequences.ts"
import { attempt, corpusPath, fail, inputPath, modelFamilies, openTokenizer } from "./kit.ts"
import { finishTraining, runTraining, summary, TRAIN_FIELDS } from "./train-common.ts"
import { TOKENIZER_FILES, writeAdaptedFolder, writeTrainedFolder } from "./train-output.ts"
import { existsSync } from "node:fs"

const Positive = Schema.Finite.check(Schema.makeFilter((x: number) => x > 0 || "expected a number > 0"))
const DropP = Schema.Finite.check(Schema.makeFilter((x: number) => (x >= 0 && x < 1) || "expected a number in [0, 1)"))

/** LoRA instead of full fine-tuning. */
export const LoraParams = Schema.Struct({
  rank: Schema.optionalKey(PosInt.pipe(doc("adapter rank r (default 8)"))),
  alpha: Schema.optionalKey(Positive.pipe(doc("scaling numerator: the update is alpha/r·B·A (default 16)"))),
  dropout: Schema.optionalKey(DropP.pipe(doc("dropout on the adapter's input while training (default 0.05)"))),
  targets: Schema.optionalKey(Schema.NonEmptyArray(Schema.NonEmptyString).pipe(doc("module names to adapt (default q_proj, k_proj, v_proj, o_proj)"))),
  trainNorms: Schema.optionalKey(Schema.Boolean.pipe(doc("LongLoRA: the norms train too (default false)"))),
  trainEmbeddings: Schema.optionalKey(Schema.Boolean.pipe(doc("LongLoRA: the input embeddings train too (default false)"))),
})
export type LoraParams = typeof LoraParams.Type

/** LongLoRA's LoRA settings. */
export const LORA_DEFAULTS = { rank: 8, alpha: 16, dropout: 0.05, targets: ["q_proj", "k_proj", "v_proj", "o_proj"] } as const

export const FinetuneParams = Schema.Struct({
  ...TRAIN_FIELDS,
  /** An HF rope_scaling object to train at (and write), replacing the model's and any `factors` input. */
  ropeScaling: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown)),
  /** How a factor set is written into config.json: ropeway's "longrope-research" (default) or HF "longrope". */
  scalingFormat: Schema.optionalKey(Schema.Literals(["longrope-research", "longrope"])),
  /** LoRA adapters instead of every weight (see the header). */
  lora: Schema.optionalKey(LoraParams),
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
      const lora = p.lora === undefined ? undefined : loraSpec(p.lora, family, config, modelDir, ctx.seed)
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
      return { family, config, tableFor, seqLen, tokenizer, optimizer, schedule, data, out: outputConfig(raw, choice, spec, seqLen), choice, positionSkip, lora }
    })
  })
}

/** The LoRA settings with their defaults; a target the family cannot adapt fails here, before anything is loaded. */
function loraSpec(l: LoraParams, family: ModelFamily, config: ModelConfig, modelDir: string, seed: number): LoraSpec {
  if (family.trainable === undefined || family.loraTargets === undefined) throw inputError(`${STAGE}.lora`, `model family "${family.name}" has no LoRA support`)
  const known = family.loraTargets(config)
  const targets = l.targets ?? LORA_DEFAULTS.targets
  for (const t of targets) if (!known.includes(t)) throw inputError(`${STAGE}.lora.targets`, `"${t}" names no module of ${modelDir} that LoRA can adapt; known: ${known.join(", ")}`)
  if (existsSync(join(modelDir, ADAPTER_CONFIG))) {
    throw inputError(`${STAGE}.lora`, `${modelDir} already carries a LoRA adapter (${ADAPTER_CONFIG}); write it merged first (stage export-model, formats [hf]) and fine-tune that`)
  }
  return {
    rank: l.rank ?? LORA_DEFAULTS.rank, alpha: l.alpha ?? LORA_DEFAULTS.alpha, dropout: l.dropout ?? LORA_DEFAULTS.dropout, targets: [...new Set(targets)],
    trainNorms: l.trainNorms === true, trainEmbeddings: l.trainEmbeddings === true, seed,
  }
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
    const lora = s.lora
    const how = lora === undefined ? "" : `, LoRA r=${lora.rank} alpha=${lora.alpha} on ${lora.targets.join(", ")}${lora.trainNorms ? " + norms" : ""}${lora.trainEmbeddings ? " + embeddings" : ""}`
    yield* ctx.progress.log(`${STAGE}: RoPE from ${s.choice.source}${mixed ? ", mixed context window" : ""}${how}`)
    const result = yield* runTraining(ctx as StageContext<unknown, string, string>, {
      stage: STAGE, family: s.family, config: s.config, weights: modelDir, ...(lora === undefined ? {} : { lora }), tableFor: s.tableFor, seqLen: s.seqLen, mixed, positionSkip: s.positionSkip,
      data: s.data, tokenizer: s.tokenizer, optimizer: s.optimizer, schedule: s.schedule, steps: p.steps, batch, ...checkpointing(p), runConfig,
      writeOutput: async (model) => {
        const dir = ctx.outputs.model
        const copy = [...TOKENIZER_FILES, "generation_config.json"]
        if (lora !== undefined) await writeAdaptedFolder(dir, modelDir, model, lora, s.out, copy)
        else await writeTrainedFolder(dir, model, `finetune, ${p.steps} steps at ${s.seqLen}, seed ${ctx.seed}`, s.out, modelDir, copy)
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
