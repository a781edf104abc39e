/**
 * The update loop: gradient accumulation over micro-batches, the schedule, clip + AdamW, periodic
 * checkpoints. The model side is a callback (`microStep`: forward + backward of one micro-batch, adding
 * `weight`·gradient into the optimizer's gradients), so the loop knows nothing of models or data.
 *
 * Resuming: restore the optimizer from a checkpoint (`restoreTraining`), put the data cursor and RNG back
 * from its meta, and pass `startStep: loopPosition(ckpt)`. Same seed, same machine → the same bits as
 * an uninterrupted run.
 */
import { type TrainingCheckpoint, type TrainingMeta, saveTraining } from "./checkpoint.ts"
import type { Optimizer } from "./optimizer.ts"
import { type ScheduleConfig, learningRate, validateSchedule } from "./schedule.ts"

export interface MicroStep {
  /** Loop position: updates attempted before this one (the schedule's step). */
  readonly step: number
  readonly micro: number
  /** 1 / accumulation: what this micro-batch's gradient is multiplied by when accumulated. */
  readonly weight: number
}

export interface StepLog {
  /** Loop position after this update. */
  readonly step: number
  readonly lr: number
  /** Mean of the micro-batch losses. */
  readonly loss: number
  readonly gradNorm: number
  readonly clipCoef: number
  /** True when the gradient norm was not finite and the update was skipped. */
  readonly skipped: boolean
  readonly seconds: number
  /** The checkpoint folder written after this update, if any. */
  readonly checkpoint?: string
}

export interface CheckpointPolicy {
  readonly root: string
  /** Save after every `every` updates, and after the last. */
  readonly every: number
  readonly keep?: number
  /** The caller's state at save time: data cursor, RNG, config, architecture (scheduler is the loop's). */
  readonly meta: () => Omit<TrainingMeta, "scheduler">
}

export interface LoopOptions {
  readonly optimizer: Optimizer
  readonly schedule: ScheduleConfig
  /** Updates to reach; default the schedule's totalSteps. */
  readonly totalSteps?: number
  /** Micro-batches per update; default 1. */
  readonly accumulation?: number
  /** Where to start: 0 for a new run, `loopPosition(ckpt)` when resuming; default the optimizer's step count. */
  readonly startStep?: number
  /** Forward + backward of one micro-batch; accumulates weight·gradient; returns its loss. */
  readonly microStep: (m: MicroStep) => Promise<number>
  readonly checkpoint?: CheckpointPolicy
  readonly onStep?: (log: StepLog) => void | Promise<void>
}

export async function trainLoop(o: LoopOptions): Promise<StepLog[]> {
  validateSchedule(o.schedule)
  const total = o.totalSteps ?? o.schedule.totalSteps
  if (total === undefined || !Number.isInteger(total) || total < 0) throw new RangeError(`trainLoop: totalSteps must be an integer ≥ 0, got ${total}`)
  const acc = o.accumulation ?? 1
  if (!Number.isInteger(acc) || acc < 1) throw new RangeError(`trainLoop: accumulation must be an integer ≥ 1, got ${acc}`)
  const every = o.checkpoint?.every
  if (every !== undefined && (!Number.isInteger(every) || every < 1)) throw new RangeError(`trainLoop: checkpoint.every must be an integer ≥ 1, got ${every}`)
  const start = o.startStep ?? o.optimizer.stepCount
  const logs: StepLog[] = []
  for (let step = start; step < total; step++) {
    const t0 = performance.now()
    o.optimizer.zeroGrad()
    let loss = 0
    for (let micro = 0; micro < acc; micro++) loss += (await o.microStep({ step, micro, weight: 1 / acc })) / acc
    const lr = learningRate(o.schedule, step)
    const r = await o.optimizer.step(lr)
    let checkpoint: string | undefined
    const c = o.checkpoint
    if (c !== undefined && ((step + 1) % c.every === 0 || step + 1 === total)) {
      const options = c.keep === undefined ? {} : { keep: c.keep }
      checkpoint = await saveTraining(c.root, o.optimizer, { ...c.meta(), scheduler: { step: step + 1 } }, options)
    }
    const log: StepLog = {
      step: step + 1, lr, loss, gradNorm: r.gradNorm, clipCoef: r.clipCoef, skipped: r.skipped,
      seconds: (performance.now() - t0) / 1000, ...(checkpoint === undefined ? {} : { checkpoint }),
    }
    logs.push(log)
    await o.onStep?.(log)
  }
  return logs
}

/** The loop position a checkpoint written by `trainLoop` resumes from (its `scheduler.step`). */
export function loopPosition(ckpt: TrainingCheckpoint): number {
  const s = ckpt.meta.scheduler
  const step = typeof s === "object" && s !== null && !Array.isArray(s) ? (s as { readonly step?: unknown }).step : undefined
  return typeof step === "number" && Number.isInteger(step) && step >= 0 ? step : ckpt.step
}
