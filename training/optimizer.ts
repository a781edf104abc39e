/**
 * AdamW over named f32 parameters, with global-norm gradient clipping (torch.nn.utils.clip_grad_norm_).
 *
 * The optimizer allocates a gradient and the two moments for each parameter it is given; the backward
 * pass writes or accumulates into `grad(name)`. `step(lr)` records one deterministic sum-of-squares
 * reduction over all gradients, reads back that one number, then records every AdamW update in the same
 * batch with the clip coefficient as a uniform. Parameter values stay the caller's tensors (updated in
 * place); `dispose` releases only what the optimizer allocated.
 */
import { ADAMW_DEFAULTS, type AdamWHyper, adamwStep, adamwUniforms } from "../kernels/adamw.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { fill } from "../kernels/scale.ts"
import { readSumSquares } from "../kernels/sumsq.ts"
import { type Tensor, numel, shapeString } from "../kernels/tensor.ts"

export interface ParamInit {
  readonly name: string
  readonly value: Tensor
  /** Whether weight decay applies (HF excludes biases and norm weights); default true. */
  readonly weightDecay?: boolean
}

export interface OptimizerConfig extends AdamWHyper {
  /** Clip the global gradient norm to this; undefined = no clipping (the norm is still measured). */
  readonly maxGradNorm?: number
  /** Skip the update (and do not count it) when the gradient norm is NaN or infinite; default true. */
  readonly skipNonFinite?: boolean
}

/** The LongRoPE fine-tuning recipe: Adam(W), betas (0.9, 0.999), eps 1e-8, weight decay 0, clip 1.0. */
export const LONGROPE_OPTIMIZER: OptimizerConfig = { ...ADAMW_DEFAULTS, maxGradNorm: 1 }
/** LongRoPE2's: AdamW, betas (0.9, 0.95), weight decay 0, clip 1.0. */
export const LONGROPE2_OPTIMIZER: OptimizerConfig = { ...ADAMW_DEFAULTS, beta2: 0.95, maxGradNorm: 1 }

export interface Param {
  readonly name: string
  readonly value: Tensor
  readonly grad: Tensor
  readonly m: Tensor
  readonly v: Tensor
  readonly weightDecay: boolean
}

export interface StepResult {
  /** Updates done after this call. */
  readonly step: number
  /** Global L2 norm of the gradients before clipping. */
  readonly gradNorm: number
  /** What the gradients were multiplied by (1 when not clipped). */
  readonly clipCoef: number
  readonly skipped: boolean
}

/** Host copy of everything needed to resume: plain arrays, bit-exact. */
export interface OptimizerState {
  readonly step: number
  readonly params: readonly ParamState[]
}

export interface ParamState {
  readonly name: string
  readonly shape: readonly number[]
  readonly weightDecay: boolean
  readonly value: Float32Array
  readonly m: Float32Array
  readonly v: Float32Array
}

export class Optimizer {
  readonly params: readonly Param[]
  readonly config: OptimizerConfig
  private readonly byName = new Map<string, Param>()
  private t = 0

  constructor(
    private readonly rt: GpuRuntime,
    params: readonly ParamInit[],
    config: Partial<OptimizerConfig> = {},
  ) {
    this.config = { ...ADAMW_DEFAULTS, ...config }
    const c = this.config
    if (!(c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1)) throw new RangeError(`optimizer: betas must lie in [0, 1), got (${c.beta1}, ${c.beta2})`)
    if (!(c.eps > 0) || !(c.weightDecay >= 0)) throw new RangeError(`optimizer: eps must be > 0 and weightDecay ≥ 0, got ${c.eps}, ${c.weightDecay}`)
    if (c.maxGradNorm !== undefined && !(c.maxGradNorm > 0)) throw new RangeError(`optimizer: maxGradNorm must be > 0, got ${c.maxGradNorm}`)
    const list: Param[] = []
    for (const p of params) {
      if (this.byName.has(p.name)) throw new Error(`optimizer: parameter "${p.name}" given twice`)
      if (p.value.dtype !== "f32") throw new Error(`optimizer: parameter "${p.name}" is ${p.value.dtype}; master weights must be f32`)
      const zeros = (): Tensor => {
        const t = rt.tensor(p.value.shape)
        fill(rt, t, 0)
        return t
      }
      const param: Param = { name: p.name, value: p.value, grad: zeros(), m: zeros(), v: zeros(), weightDecay: p.weightDecay ?? true }
      this.byName.set(p.name, param)
      list.push(param)
    }
    this.params = list
  }

  /** Updates done so far (AdamW's t after the last step). */
  get stepCount(): number {
    return this.t
  }

  param(name: string): Param {
    const p = this.byName.get(name)
    if (p === undefined) throw new Error(`optimizer: no parameter "${name}"`)
    return p
  }

  grad(name: string): Tensor {
    return this.param(name).grad
  }

  zeroGrad(): void {
    for (const p of this.params) fill(this.rt, p.grad, 0)
  }

  /** Global L2 norm of all gradients (reads back one number). */
  async gradNorm(): Promise<number> {
    return Math.sqrt(await readSumSquares(this.rt, this.params.map((p) => p.grad)))
  }

  /** Clip, then one AdamW update of every parameter at learning rate `lr`. Gradients are left as they are. */
  async step(lr: number): Promise<StepResult> {
    const norm = await this.gradNorm()
    const max = this.config.maxGradNorm
    if (!Number.isFinite(norm) && this.config.skipNonFinite !== false) return { step: this.t, gradNorm: norm, clipCoef: 0, skipped: true }
    const clipCoef = max === undefined ? 1 : Math.min(1, max / (norm + 1e-6))
    const t = this.t + 1
    const withDecay = adamwUniforms(this.config, lr, t, clipCoef)
    const noDecay = adamwUniforms(this.config, lr, t, clipCoef, 0)
    for (const p of this.params) adamwStep(this.rt, p.value, p.grad, p.m, p.v, p.weightDecay ? withDecay : noDecay)
    this.t = t
    return { step: t, gradNorm: norm, clipCoef, skipped: false }
  }

  async exportState(): Promise<OptimizerState> {
    const params: ParamState[] = []
    for (const p of this.params) {
      params.push({
        name: p.name, shape: [...p.value.shape], weightDecay: p.weightDecay,
        value: await this.rt.read(p.value), m: await this.rt.read(p.m), v: await this.rt.read(p.v),
      })
    }
    return { step: this.t, params }
  }

  /**
   * Restores values, moments and the step count. The state must hold exactly this optimizer's
   * parameters with the same shapes; `source` names where it came from in errors.
   */
  importState(state: OptimizerState, source = "optimizer state"): void {
    const problems = shapeProblems(new Map(this.params.map((p) => [p.name, p.value.shape])), new Map(state.params.map((p) => [p.name, p.shape])))
    if (problems.length > 0) throw new Error(`${source}: checkpoint from another architecture: ${problems.join("; ")}`)
    if (!Number.isInteger(state.step) || state.step < 0) throw new Error(`${source}: step must be an integer ≥ 0, got ${state.step}`)
    for (const s of state.params) {
      const p = this.param(s.name)
      const n = numel(p.value.shape)
      for (const [what, data] of [["value", s.value], ["m", s.m], ["v", s.v]] as const) {
        if (data.length !== n) throw new Error(`${source}: "${s.name}" ${what} has ${data.length} values, expected ${n}`)
      }
      this.rt.write(p.value, s.value)
      this.rt.write(p.m, s.m)
      this.rt.write(p.v, s.v)
    }
    this.t = state.step
  }

  /** Releases the gradients and moments (not the parameter values, which are the caller's). */
  dispose(): void {
    for (const p of this.params) this.rt.release(p.grad, p.m, p.v)
  }
}

/**
 * Differences between the shapes a model expects and those found, one phrase each: missing tensors,
 * unexpected ones, shape mismatches. Empty when they agree.
 */
export function shapeProblems(expected: ReadonlyMap<string, readonly number[]>, found: ReadonlyMap<string, readonly number[]>): string[] {
  const out: string[] = []
  for (const [name, shape] of expected) {
    const f = found.get(name)
    if (f === undefined) out.push(`tensor "${name}" is missing from the checkpoint`)
    else if (f.length !== shape.length || f.some((d, i) => d !== shape[i])) out.push(`"${name}" has shape ${shapeString(f)} in the checkpoint, expected ${shapeString(shape)}`)
  }
  for (const name of found.keys()) if (!expected.has(name)) out.push(`the checkpoint has tensor "${name}", which is not expected`)
  return out
}
