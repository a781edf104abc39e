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
 * stages/train-common.ts for how one-table-per-call lossAndGrad is grouped per sequence.
 *
 * `positionSkip: { length, chunks? }` is PoSE: sequences stay seqLen tokens but each document's later
 * pieces jump ahead in position, up to `length`, and the document takes the set for its last position + 1
 * (beyond the factor set's last max_length, the last set, as inference picks). It trains positions and
 * distances up to `length` at the cost of seqLen-token sequences (train-common `skipPositions`).
 *
 * Two stage names, one implementation, as `search`/`search-factors`: a workflow wires every input a
 * stage declares.
 */
import { Effect, Schema } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { inputError } from "../common/errors.ts"
import { defineStage, type Json, type StageContext } from "../pipeline/workflow/stage.ts"
import { byteTokenizer, loadTokenizer, type TextTokenizer } from "../plugins/data/tokenizer.ts"
import { readLlamaConfig } from "../plugins/models/llama/config.ts"
import { factorSetToHfLongrope, factorSetToScaling, parseFactorSetFile, ropeSpecFromConfig } from "../plugins/rope/formats.ts"
import { resolveRope } from "../plugins/rope/index.ts"
import type { RopeSpec } from "../plugins/rope/types.ts"
import { TOKENIZER_FILES, pretrainStage, summary } from "./pretrain.ts"
import {
  asStageError, checkCoverage, writeTrainedFolder, checkpointing, fail, finishTraining, Obj, optimizerAndSchedule, positionSkipOf, resolveTrainData, ropeCoverage, runTraining, TRAIN_FIELDS, type TrainDefaults, type TrainParams,
} from "./train-common.ts"
import { corpusPath } from "./kit.ts"

export const FinetuneParams = Schema.Struct({
  ...TRAIN_FIELDS,
  /** An HF rope_scaling object to train at (and write), replacing the model's and any `factors` input. */
  ropeScaling: Schema.optionalKey(Obj),
  /** How a factor set is written into config.json: ropeway's "longrope-research" (default) or HF "longrope". */
  scalingFormat: Schema.optionalKey(Schema.Literals(["longrope-research", "longrope"])),
})
export type FinetuneParams = typeof FinetuneParams.Type

/** LongRoPE's fine-tuning recipe (§4). */
export const FINETUNE_DEFAULTS: TrainDefaults = {
  lr: 2e-5, schedule: "linear", warmup: 20, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, clip: 1, mixedContext: false,
}

export const FINETUNE_VERSION = "1"

type Config = Record<string, unknown>

/** The scaling to train at, what goes into the output config.json, and where it came from. */
interface RopeChoice {
  readonly scaling: Config | undefined
  readonly written: Config | undefined
  readonly source: string
}

function chooseRope(p: FinetuneParams, config: Config, configFile: string, factorsPath: string | undefined): RopeChoice {
  if (p.ropeScaling !== undefined) {
    if (p.scalingFormat !== undefined) throw inputError("finetune.scalingFormat", "applies to a factor set (the `factors` input), not to ropeScaling")
    // `{}` is plain RoPE: trained without scaling, so the output must not keep the input's.
    const s = Object.keys(p.ropeScaling).length === 0 ? undefined : { ...p.ropeScaling }
    return { scaling: s, written: s ?? { rope_type: "default" }, source: "finetune.ropeScaling" }
  }
  if (factorsPath !== undefined) {
    const file = parseFactorSetFile(readFileSync(factorsPath, "utf8"), factorsPath)
    const spec = ropeSpecFromConfig(config, configFile)
    if (file.model.rotary_dim !== spec.rotaryDim || file.model.base !== spec.base) {
      throw inputError(factorsPath, `factor set is for rotary_dim ${file.model.rotary_dim}, base ${file.model.base}; the model has ${spec.rotaryDim}, ${spec.base}`)
    }
    const scaling = factorSetToScaling(file) as Config
    const written = p.scalingFormat === "longrope" ? (factorSetToHfLongrope(file, factorsPath) as Config) : scaling
    return { scaling, written, source: factorsPath }
  }
  if (p.scalingFormat !== undefined) throw inputError("finetune.scalingFormat", "applies to a factor set: wire a `factors` input (stage finetune-factors)")
  const spec = ropeSpecFromConfig(config, configFile)
  return { scaling: spec.scaling === undefined ? undefined : { ...spec.scaling }, written: undefined, source: configFile }
}

/**
 * The output config.json: the input's with the training scaling written (when it changed) and
 * max_position_embeddings raised to what the table covers. Where that raise would make a method read a
 * different original length (yarn etc. fall back to max_position_embeddings), the original goes into the
 * scaling explicitly.
 */
function outputConfig(config: Config, choice: RopeChoice, spec: RopeSpec, seqLen: number): Config {
  if (choice.written === undefined) return config
  const oldMax = spec.maxPositions
  const original = spec.originalMaxPositions ?? (typeof config["original_max_position_embeddings"] === "number" ? (config["original_max_position_embeddings"] as number) : oldMax)
  let scaling = { ...choice.written }
  const type = scaling["rope_type"] ?? scaling["type"]
  // What the training table covers (for a factor set written as HF longrope too: its long set's max_length).
  const newMax = Math.max(oldMax, seqLen, ropeCoverage(spec).length)
  if (type !== "default" && scaling["original_max_position_embeddings"] === undefined && config["original_max_position_embeddings"] === undefined) {
    scaling = { ...scaling, original_max_position_embeddings: original }
  }
  const out: Config = { ...config }
  delete out["rope_scaling"]
  delete out["rope_parameters"]
  out["rope_scaling"] = type === "default" ? null : scaling
  out["max_position_embeddings"] = newMax
  return out
}

function openTokenizer(spec: string | undefined, modelDir: string): TextTokenizer {
  if (spec !== undefined) return loadTokenizer(spec)
  return existsSync(join(modelDir, "tokenizer.json")) ? loadTokenizer(modelDir) : byteTokenizer()
}

export function runFinetune(ctx: StageContext<FinetuneParams, string, "model">) {
  return Effect.gen(function* () {
    const p = ctx.params
    const stage = "finetune"
    const inputs = ctx.inputs as Record<string, string | undefined>
    const modelDir = inputs["model"]
    if (modelDir === undefined) return yield* fail(`${stage}: input \`model\` (a Hugging Face model folder) is required`)
    const setup = yield* Effect.try({
      try: () => {
        const configFile = join(modelDir, "config.json")
        if (!existsSync(configFile)) throw inputError(configFile, "not found (a Hugging Face model folder needs config.json)")
        const raw = JSON.parse(readFileSync(configFile, "utf8")) as Config
        const choice = chooseRope(p, raw, configFile, inputs["factors"])
        const config = readLlamaConfig(modelDir, { ropeScaling: choice.scaling ?? null })
        const spec = choice.scaling === undefined ? config.rope : ropeSpecFromConfig(raw, configFile, { scaling: choice.scaling, key: choice.source })
        const tableFor = resolveRope(spec, choice.source)
        const seqLen = p.seqLen ?? ropeCoverage(spec).length
        checkCoverage(stage, seqLen, spec, "give a factor set (stage finetune-factors) or a ropeScaling whose range covers it, or lower seqLen")
        tableFor(seqLen) // a bad scaling fails now, naming its source
        const tokenizer = openTokenizer(p.tokenizer, modelDir)
        if (tokenizer.vocabSize > config.vocabSize) throw inputError(`${stage}.tokenizer`, `${tokenizer.name} has ${tokenizer.vocabSize} ids but the model's vocab_size is ${config.vocabSize}`)
        const { optimizer, schedule } = optimizerAndSchedule(stage, p as TrainParams, FINETUNE_DEFAULTS)
        const data = resolveTrainData(stage, p.data, tokenizer, seqLen, ctx.seed)
        const positionSkip = positionSkipOf(stage, p as TrainParams, seqLen)
        const out = outputConfig(raw, choice, spec, seqLen)
        return { config, spec, tableFor, seqLen, tokenizer, optimizer, schedule, data, out, choice, positionSkip }
      },
      catch: (e) => asStageError(e, stage),
    })
    const batch = p.batch ?? 1
    const mixed = p.mixedContext ?? FINETUNE_DEFAULTS.mixedContext
    const runConfig: Json = { stage, seed: ctx.seed, params: p as unknown as Json, rope: setup.choice.source }
    yield* ctx.progress.log(`${stage}: RoPE from ${setup.choice.source}${mixed ? ", mixed context window" : ""}`)
    const result = yield* runTraining(ctx as StageContext<unknown, string, string>, {
      stage,
      config: setup.config,
      weights: modelDir,
      tableFor: setup.tableFor,
      seqLen: setup.seqLen,
      mixed,
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
        const dir = ctx.outputs.model
        await writeTrainedFolder(dir, model, `finetune, ${p.steps} steps at ${setup.seqLen}, seed ${ctx.seed}`, setup.out, modelDir, [...TOKENIZER_FILES, "generation_config.json"])
        // What we wrote must load and give the table we trained with at seqLen.
        const back = readLlamaConfig(dir)
        resolveRope(back.rope)(setup.seqLen)
      },
    })
    yield* finishTraining(ctx as StageContext<unknown, string, string>, stage, { ...(runConfig as Record<string, Json>), seqLen: setup.seqLen, batch, mixedContext: mixed }, result)
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
