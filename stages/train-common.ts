/**
 * What `pretrain` and `finetune` share: the params every training stage takes (data, optimizer, schedule,
 * batch, checkpoints) and the training run itself as an Effect:
 *
 *   device (the Gpu service, or one acquired for the step) → the family's trainable model → AdamW →
 *   resume from the newest training checkpoint in ctx.checkpointDir (or `resumeFrom`) → one update at a
 *   time (uninterruptible: a GPU step cannot be abandoned half-way; interruption lands between updates) →
 *   the stage's own output writer.
 *
 * Sequences (continuous or LongRoPE2's mixed context window, PoSE position skips) are training/sequences.ts;
 * the documents plugins/data/training.ts; the optimizer and schedule from params training/config.ts.
 *
 * Exact resume: the checkpoint holds weights, AdamW moments and step (training/checkpoint.ts), the loop
 * position, and the data cursor. Nothing else is random during training (the data order is a seeded
 * permutation per epoch, a synthetic document is a function of (seed, index)), so a resumed run
 * reproduces the uninterrupted one bit for bit on the same machine.
 */
import { Effect, Schema } from "effect"
import { existsSync, statSync } from "node:fs"
import { join, resolve } from "node:path"
import { attempt, attemptPromise, inputError } from "../common/errors.ts"
import { writeFileAtomic } from "../common/files.ts"
import { mixSeed, Rng } from "../common/rng.ts"
import { NonNeg, NonNegInt, PosInt } from "../common/schema.ts"
import type { RopeTable } from "../kernels/rope-table.ts"
import type { Json, StageContext } from "../pipeline/workflow/stage.ts"
import { type DataCursor, Packer } from "../plugins/data/pack.ts"
import { TrainDataParams } from "../plugins/data/params.ts"
import type { TrainData } from "../plugins/data/training.ts"
import type { TextTokenizer } from "../plugins/data/tokenizer.ts"
import type { ModelConfig, ModelFamily, TrainPlan } from "../plugins/models/family.ts"
import { checkFits, deviceBudget } from "../plugins/models/registry.ts"
import { type CheckpointDamaged, latestTrainingCheckpoint, restoreNewestTraining, restoreTraining } from "../training/checkpoint.ts"
import type { TrainHyper } from "../training/config.ts"
import { loopPosition, trainLoop } from "../training/loop.ts"
import type { HostWeights, LoraSpec, TrainableModel } from "../training/model.ts"
import { Optimizer, type OptimizerConfig } from "../training/optimizer.ts"
import type { ScheduleConfig } from "../training/schedule.ts"
import { documentSpans, type PositionSkip, sequenceCalls, SKIP_STREAM, skipPositions } from "../training/sequences.ts"
import { gpuRuntime } from "./kit.ts"

const Beta = Schema.Finite.check(Schema.makeFilter((x: number) => (x >= 0 && x < 1) || "expected a number in [0, 1)"))

/** The params both training stages take. Defaults differ per stage (see each stage's defaults). */
export const TRAIN_FIELDS = {
  /** Tokens per training sequence (model inputs; targets are the same shifted by one). */
  seqLen: Schema.optionalKey(PosInt),
  /** Optimizer updates. */
  steps: PosInt,
  /** Sequences per update, by gradient accumulation (one sequence per forward/backward). */
  batch: Schema.optionalKey(PosInt),
  /** Peak learning rate. */
  lr: Schema.optionalKey(NonNeg),
  schedule: Schema.optionalKey(Schema.Literals(["constant", "linear", "cosine"])),
  /** Linear warmup updates (from 0). */
  warmup: Schema.optionalKey(NonNegInt),
  /** Where linear/cosine decay ends. */
  minLr: Schema.optionalKey(NonNeg),
  weightDecay: Schema.optionalKey(NonNeg),
  beta1: Schema.optionalKey(Beta),
  beta2: Schema.optionalKey(Beta),
  eps: Schema.optionalKey(Schema.Finite.check(Schema.makeFilter((x: number) => x > 0 || "expected a number > 0"))),
  /** Global gradient-norm clip; 0 = none. */
  clip: Schema.optionalKey(NonNeg),
  /** `{source: "synthetic", seed?, tasks?, docLength?, documents?, filler?, ...}` (default) or `{source: "corpus", path, field?}`. */
  data: Schema.optionalKey(TrainDataParams),
  /** "byte" or a folder with tokenizer.json. */
  tokenizer: Schema.optionalKey(Schema.NonEmptyString),
  /** LongRoPE2's mixed context window (positions restart per document, per-document factor set). */
  mixedContext: Schema.optionalKey(Schema.Boolean),
  /**
   * PoSE position skipping: each document (the whole sequence when not mixed) is cut into `chunks`
   * pieces and later pieces' positions jump ahead, so positions reach up to `length` while the sequence
   * stays seqLen tokens long. See training/sequences.ts `skipPositions`.
   */
  positionSkip: Schema.optionalKey(Schema.Struct({ length: PosInt, chunks: Schema.optionalKey(Schema.Int.check(Schema.makeFilter((x: number) => x >= 2 || "expected at least 2 pieces per document"))) })),
  /** Save a training checkpoint every this many updates (and after the last). */
  checkpointEvery: Schema.optionalKey(PosInt),
  /** Training checkpoints kept (newest). */
  keepCheckpoints: Schema.optionalKey(PosInt),
  /** Continue from this training checkpoint (a step-N folder, or a folder of them) when the step has none. */
  resumeFrom: Schema.optionalKey(Schema.NonEmptyString),
} as const

const TrainFields = Schema.Struct(TRAIN_FIELDS)
export type TrainParams = typeof TrainFields.Type & TrainHyper

export interface TrainingSetup {
  readonly stage: string
  readonly family: ModelFamily
  readonly config: ModelConfig
  /** Initial weights: a model folder or host tensors by HF name. */
  readonly weights: string | HostWeights
  /** LoRA adapters instead of training every weight. */
  readonly lora?: LoraSpec
  /** The RoPE table for an input length (memoised here). */
  readonly tableFor: (length: number) => RopeTable
  readonly seqLen: number
  readonly mixed: boolean
  readonly positionSkip: PositionSkip | undefined
  readonly data: TrainData
  readonly tokenizer: TextTokenizer
  readonly optimizer: OptimizerConfig
  readonly schedule: ScheduleConfig
  readonly steps: number
  readonly batch: number
  readonly checkpointEvery: number
  readonly keep: number
  readonly resumeFrom: string | undefined
  /** Hyper-parameters, stored with every checkpoint. */
  readonly runConfig: Json
  /** Writes the stage's output (the HF folder) from the trained model. */
  readonly writeOutput: (model: TrainableModel) => Promise<void>
}

export interface TrainingResult {
  readonly steps: number
  readonly resumedAt: number
  /** Mean loss of each update, from step 1 (carried across resumes). */
  readonly losses: readonly number[]
  readonly tokens: number
  readonly seconds: number
  readonly tokensPerSecond: number
}

/** `resumeFrom`: a step-N folder, or a folder holding them (its newest). */
function resumeDir(stage: string, path: string): string {
  const p = resolve(path)
  if (!existsSync(p) || !statSync(p).isDirectory()) throw inputError(`${stage}.resumeFrom`, `${p} is not a folder`)
  if (existsSync(join(p, "trainer_state.json"))) return p
  const latest = latestTrainingCheckpoint(p)
  if (latest === undefined) throw inputError(`${stage}.resumeFrom`, `${p} holds no training checkpoint (no step-N folder with trainer_state.json)`)
  return latest
}

interface DataMeta {
  readonly cursor: DataCursor
  readonly losses: readonly number[]
}

const finiteOrNull = (x: number): number | null => (Number.isFinite(x) ? x : null)

const isCursor = (v: unknown): v is DataCursor =>
  typeof v === "object" && v !== null && ["epoch", "doc", "offset"].every((k) => typeof (v as Record<string, unknown>)[k] === "number")

/** What the memory plan of this run trains. */
export const trainPlanOf = (lora: LoraSpec | undefined): TrainPlan =>
  lora === undefined ? { mode: "full" } : { mode: "lora", rank: lora.rank, targets: lora.targets, trainNorms: lora.trainNorms === true, trainEmbeddings: lora.trainEmbeddings === true }

/** Seeds LoRA dropout masks: one stream per (update, micro-batch, call), so a resumed run drops what the first would have. */
const DROPOUT_STREAM = 0xd209

/**
 * The device, the family's trainable model and AdamW over its parameters, released with the scope. The
 * memory plan of a step is checked first: a run that cannot fit is refused before any weight is read.
 */
const trainer = (s: TrainingSetup) =>
  Effect.gen(function* () {
    const rt = yield* gpuRuntime
    const trainable = s.family.trainable
    if (trainable === undefined) return yield* inputError(s.stage, `model family "${s.family.name}" has no training support`)
    yield* attempt(`${s.stage}: memory`, () => checkFits(s.family, { config: s.config }, s.seqLen, deviceBudget(rt), { train: trainPlanOf(s.lora) }))
    const options = s.lora === undefined ? {} : { lora: s.lora }
    const model = yield* Effect.acquireRelease(attempt(`${s.stage}: loading the weights`, () => trainable(rt, s.config, s.weights, options)), (m) => Effect.sync(() => m.dispose()))
    const optimizer = yield* Effect.acquireRelease(attempt(`${s.stage}: optimizer`, () => new Optimizer(rt, model.params, s.optimizer)), (o) => Effect.sync(() => o.dispose()))
    return { model, optimizer }
  })

/**
 * This step's own newest whole checkpoint (a damaged newer one is set aside, named in `setAside`), else
 * `resumeFrom`. A mismatch (another architecture) fails here, touching nothing on disk.
 */
const resumeState = (s: TrainingSetup, root: string, optimizer: Optimizer, architecture: Json) =>
  attempt(`${s.stage}: resuming`, () => {
    const setAside: string[] = []
    const damaged = (e: CheckpointDamaged, dir: string) => setAside.push(`${s.stage}: checkpoint ${dir} is damaged (${e.message}); set aside, resuming from the one before`)
    let ckpt = restoreNewestTraining(root, optimizer, architecture, damaged)
    if (ckpt === undefined && s.resumeFrom !== undefined) ckpt = restoreTraining(resumeDir(s.stage, s.resumeFrom), optimizer, architecture)
    if (ckpt === undefined) return { resumed: undefined, setAside }
    const dir = ckpt.dir
    const data = ckpt.meta.data as unknown as Partial<DataMeta> | null
    if (data === null || !isCursor(data.cursor)) throw inputError(join(dir, "trainer_state.json"), "no data cursor (not written by a ropeway training stage)")
    const step = loopPosition(ckpt)
    if (step > s.steps) throw inputError(`${s.stage}.steps`, `${s.steps} is fewer than the ${step} updates of the checkpoint ${dir}`)
    const losses = Array.isArray(data.losses) ? data.losses.map((x) => (typeof x === "number" ? x : Number.NaN)) : []
    return { resumed: { dir, step, cursor: data.cursor, losses }, setAside }
  })

/**
 * One micro-step: the next packed sequence (positions skipped when asked, from where it starts in the data,
 * so a resumed run skips the same way), split into loss calls, gradients accumulated with their weights.
 * `stepLoss()` is the current update's mean loss, for the checkpoint written after it.
 */
function microSteps(s: TrainingSetup, model: TrainableModel, optimizer: Optimizer, packer: Packer) {
  const memo = new Map<number, RopeTable>()
  const tableFor = (length: number): RopeTable => {
    let t = memo.get(length)
    if (t === undefined) memo.set(length, (t = s.tableFor(length)))
    return t
  }
  let stepLoss = 0
  const microStep = async ({ step, micro }: { readonly step: number; readonly micro: number }): Promise<number> => {
    if (micro === 0) stepLoss = 0
    const at = s.positionSkip === undefined ? undefined : packer.cursor()
    const seq = packer.next()
    if (s.positionSkip !== undefined && at !== undefined) {
      skipPositions(seq.positions, documentSpans(seq.docLengths, s.seqLen, s.mixed), s.positionSkip, Rng.seeded(s.data.seed, SKIP_STREAM, at.epoch, at.doc, at.offset))
    }
    const calls = sequenceCalls(seq.tokens, seq.positions, seq.docLengths, s.mixed, tableFor, seq.weights)
    const total = calls.reduce((a, c) => a + c.scored, 0)
    let loss = 0
    for (const [i, c] of calls.entries()) {
      const r = await model.lossAndGrad(
        {
          inputs: c.inputs, targets: c.targets, rope: c.rope, dropoutSeed: mixSeed(s.data.seed, DROPOUT_STREAM, step, micro, i),
          ...(c.positions === undefined ? {} : { positions: c.positions }),
          ...(c.segments === undefined ? {} : { segments: c.segments }),
          ...(c.labelMask === undefined ? {} : { labelMask: c.labelMask }),
        },
        { grads: (n) => optimizer.grad(n), scale: ((1 / s.batch) * c.scored) / total },
      )
      loss += (r.loss * c.scored) / total
    }
    stepLoss += loss / s.batch
    return loss
  }
  return { microStep, stepLoss: () => stepLoss }
}

/** Trains as the setup says; returns the loss curve and speed. Needs a Scope (the model and device). */
export function runTraining(ctx: StageContext<unknown, string, string>, s: TrainingSetup) {
  return Effect.gen(function* () {
    const { model, optimizer } = yield* trainer(s)
    const root = join(ctx.checkpointDir, "training")
    const architecture = model.architecture ?? null
    const { resumed, setAside } = yield* resumeState(s, root, optimizer, architecture)
    for (const line of setAside) yield* ctx.progress.log(line)
    const start = resumed?.step ?? 0
    const losses: number[] = [...(resumed?.losses ?? [])].slice(0, start)
    if (resumed !== undefined) yield* ctx.progress.log(`${s.stage}: resuming at step ${start}/${s.steps} from ${resumed.dir}`)
    else yield* ctx.progress.log(`${s.stage}: ${s.steps} steps × ${s.batch} sequences of ${s.seqLen} tokens; data: ${s.data.describe}`)
    const packer = yield* attempt(`${s.stage}: data`, () =>
      new Packer({
        source: s.data.source, seqLen: s.seqLen + 1, bos: s.tokenizer.bos, eos: s.tokenizer.eos, seed: s.data.seed,
        restartPositions: s.mixed, ...(resumed === undefined ? {} : { cursor: resumed.cursor }),
        ...(s.data.answerWeight === undefined ? {} : { answerWeight: s.data.answerWeight }),
        ...(s.data.answerStop === undefined ? {} : { answerStop: s.data.answerStop }),
      }))
    const { microStep, stepLoss } = microSteps(s, model, optimizer, packer)
    const t0 = performance.now()
    let t1 = t0
    for (let step = start; step < s.steps; step++) {
      const save = (step + 1) % s.checkpointEvery === 0 || step + 1 === s.steps
      // rng: nothing random is drawn while training (see the header); the data cursor is the state.
      const meta = () => ({ data: { cursor: { ...packer.cursor() }, losses: [...losses, stepLoss()].map(finiteOrNull) }, rng: null, config: s.runConfig, architecture })
      yield* attemptPromise(`${s.stage}: step ${step + 1}`, () =>
        trainLoop({
          optimizer, schedule: s.schedule, startStep: step, totalSteps: step + 1, accumulation: s.batch, microStep,
          ...(save ? { checkpoint: { root, every: 1, keep: s.keep, meta } } : {}),
          onStep: () => void losses.push(stepLoss()),
        })).pipe(Effect.uninterruptible)
      const done = step + 1
      // the rate counts from the end of the run's first step: that step compiles and tunes the kernels
      if (step === start) t1 = performance.now()
      const rate = done - start > 1 ? ((done - start - 1) * s.batch * s.seqLen) / ((performance.now() - t1) / 1000) : undefined
      yield* ctx.progress.report(done / s.steps, `step ${done}/${s.steps}, loss ${losses[losses.length - 1]!.toFixed(4)}${rate === undefined ? "" : `, ${Math.round(rate)} tok/s`}`)
    }
    const seconds = (performance.now() - t0) / 1000
    yield* attemptPromise(`${s.stage}: writing the model`, () => s.writeOutput(model))
    const tokens = (s.steps - start) * s.batch * s.seqLen
    return { steps: s.steps, resumedAt: start, losses, tokens, seconds, tokensPerSecond: seconds > 0 ? tokens / seconds : 0 } satisfies TrainingResult
  })
}

export const fmtLoss = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(4))

/** After a training stage: `ropeway_training.json` (run config + loss curve) beside the model, and a log line. */
export const finishTraining = (ctx: StageContext<unknown, string, string>, stage: string, record: Record<string, Json>, result: TrainingResult) =>
  Effect.gen(function* () {
    yield* attempt(`${stage}: writing ropeway_training.json`, () =>
      writeFileAtomic(join(ctx.outputs.model!, "ropeway_training.json"), `${JSON.stringify({ ...record, losses: result.losses as number[] }, null, 1)}\n`))
    yield* ctx.progress.log(`${stage}: done, loss ${fmtLoss(result.losses[0])} → ${fmtLoss(result.losses.at(-1))}, ${Math.round(result.tokensPerSecond)} tok/s`)
  })

/** The stage's JSON result: the loss at the start and end (and every tenth step), tokens and speed. */
export function summary(r: TrainingResult): Json {
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
