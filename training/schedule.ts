/**
 * Learning-rate schedules, as pure functions of the update index, matching Hugging Face transformers'
 * `get_{constant,linear,cosine}_schedule_with_warmup` (LambdaLR, so `lr(s) = base · λ(s)`).
 *
 * `step` is the number of optimizer updates already done: the first update uses `lr(0)`. As in HF, that
 * is 0 when there is warmup (HF steps the scheduler after the optimizer). Warmup is linear from 0:
 * λ(s) = s / warmup for s < warmup.
 */

export type ScheduleKind = "constant" | "linear" | "cosine"

export interface ScheduleConfig {
  readonly kind: ScheduleKind
  /** Peak (base) learning rate. */
  readonly lr: number
  readonly warmupSteps?: number
  /** Total updates; required for linear and cosine decay. */
  readonly totalSteps?: number
  /**
   * Where linear/cosine decay ends (absolute lr, default 0), as HF's `cosine_with_min_lr`
   * (`min + (lr − min)·λ` after warmup) and fairseq's `polynomial_decay` `end_learning_rate`.
   */
  readonly minLr?: number
  /** Cosine only: HF's `num_cycles` (0.5 = one half-cosine from peak to min). */
  readonly numCycles?: number
}

/** The learning rate for update index `step` (0-based). */
export function learningRate(cfg: ScheduleConfig, step: number): number {
  if (!Number.isInteger(step) || step < 0) throw new RangeError(`schedule: step must be a non-negative integer, got ${step}`)
  const warmup = cfg.warmupSteps ?? 0
  if (step < warmup) return cfg.lr * (step / Math.max(1, warmup))
  if (cfg.kind === "constant") return cfg.lr
  const total = cfg.totalSteps
  if (total === undefined) throw new RangeError(`schedule: ${cfg.kind} decay needs totalSteps`)
  const min = cfg.minLr ?? 0
  let factor: number
  if (cfg.kind === "linear") {
    factor = Math.max(0, (total - step) / Math.max(1, total - warmup))
  } else {
    // Progress is clamped at 1, so past totalSteps the rate stays at the minimum (HF's formula would
    // start rising again on a half-cosine).
    const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup))
    factor = Math.max(0, 0.5 * (1 + Math.cos(Math.PI * (cfg.numCycles ?? 0.5) * 2 * progress)))
  }
  return min + (cfg.lr - min) * factor
}

/** Checks a config once, up front, with messages naming the field. */
export function validateSchedule(cfg: ScheduleConfig): void {
  const bad = (field: string, why: string) => new RangeError(`schedule.${field}: ${why}`)
  if (!(cfg.lr >= 0) || !Number.isFinite(cfg.lr)) throw bad("lr", `must be a finite number ≥ 0, got ${cfg.lr}`)
  const w = cfg.warmupSteps ?? 0
  if (!Number.isInteger(w) || w < 0) throw bad("warmupSteps", `must be an integer ≥ 0, got ${w}`)
  if (cfg.kind !== "constant") {
    const t = cfg.totalSteps
    if (t === undefined || !Number.isInteger(t) || t < 1) throw bad("totalSteps", `${cfg.kind} decay needs an integer ≥ 1, got ${t}`)
    if (w > t) throw bad("warmupSteps", `${w} exceeds totalSteps ${t}`)
    const min = cfg.minLr ?? 0
    if (!(min >= 0 && min <= cfg.lr)) throw bad("minLr", `must lie in [0, lr = ${cfg.lr}], got ${min}`)
  }
}

/** A validated schedule as a function. */
export function schedule(cfg: ScheduleConfig): (step: number) => number {
  validateSchedule(cfg)
  return (step) => learningRate(cfg, step)
}
