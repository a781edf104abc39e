/**
 * A training run's optimizer, schedule and checkpoint policy from its params and a stage's defaults
 * (fine-tuning: LongRoPE's recipe; pre-training: small-model defaults). The params' types are checked by
 * their schema; what is left here are the rules that involve the defaults (warmup ≤ steps, minLr ≤ lr).
 */
import { inputError } from "../common/errors.ts"
import type { OptimizerConfig } from "./optimizer.ts"
import { type ScheduleConfig, type ScheduleKind, validateSchedule } from "./schedule.ts"

/** The hyper-parameters a training stage takes (each optional but `steps`; defaults per stage). */
export interface TrainHyper {
  readonly steps: number
  readonly lr?: number
  readonly schedule?: ScheduleKind
  readonly warmup?: number
  readonly minLr?: number
  readonly weightDecay?: number
  readonly beta1?: number
  readonly beta2?: number
  readonly eps?: number
  readonly clip?: number
  readonly checkpointEvery?: number
  readonly keepCheckpoints?: number
  readonly resumeFrom?: string
}

/** A stage's defaults for the optional hyper-parameters. */
export interface TrainDefaults {
  readonly lr: number
  readonly schedule: ScheduleKind
  /** Warmup when not given: min(this, ⌊steps/10⌋), so short runs still reach the peak rate. */
  readonly warmup: number
  readonly weightDecay: number
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  readonly clip: number
  readonly mixedContext: boolean
}

/** The checkpoint policy both training stages derive from their params (every ~10% of the run, keep 2). */
export const checkpointing = (p: TrainHyper): { checkpointEvery: number; keep: number; resumeFrom: string | undefined } => ({
  checkpointEvery: p.checkpointEvery ?? Math.max(1, Math.ceil(p.steps / 10)),
  keep: p.keepCheckpoints ?? 2,
  resumeFrom: p.resumeFrom,
})

/** The optimizer and schedule from params and defaults; errors name the param. */
export function optimizerAndSchedule(stage: string, p: TrainHyper, d: TrainDefaults): { optimizer: OptimizerConfig; schedule: ScheduleConfig } {
  const clip = p.clip ?? d.clip
  const optimizer: OptimizerConfig = {
    beta1: p.beta1 ?? d.beta1, beta2: p.beta2 ?? d.beta2, eps: p.eps ?? d.eps, weightDecay: p.weightDecay ?? d.weightDecay,
    ...(clip > 0 ? { maxGradNorm: clip } : {}),
  }
  const lr = p.lr ?? d.lr
  const warmup = p.warmup ?? Math.min(d.warmup, Math.floor(p.steps / 10))
  if (warmup > p.steps) throw inputError(`${stage}.warmup`, `${warmup} exceeds steps (${p.steps})`)
  if (p.minLr !== undefined && p.minLr > lr) throw inputError(`${stage}.minLr`, `must not exceed lr (${lr}), got ${p.minLr}`)
  const schedule: ScheduleConfig = { kind: p.schedule ?? d.schedule, lr, warmupSteps: warmup, totalSteps: p.steps, ...(p.minLr === undefined ? {} : { minLr: p.minLr }) }
  try {
    validateSchedule(schedule)
  } catch (e) {
    throw inputError(stage, (e as Error).message)
  }
  return { optimizer, schedule }
}
