// A small deterministic optimisation shared by the checkpoint and loop tests: least squares y ≈ W·x + b
// over N rows, minibatches drawn through a seeded permutation (the data cursor), targets jittered with
// the run's RNG, accumulated micro-batches, clipping, warmup + linear decay. Every piece of state a
// resume needs is exercised. Gradients are computed on the host in float64 from the GPU's f32 weights.
import type { GpuRuntime } from "../../kernels/runtime.ts"
import { Rng } from "../../common/rng.ts"
import { accumulateGrad } from "../../training/accumulate.ts"
import { Optimizer } from "../../training/optimizer.ts"
import { type ScheduleConfig, learningRate } from "../../training/schedule.ts"

export const N = 40, D = 8, O = 3, BATCH = 4, MICRO = 2, SEED = 5
export const ARCH = { in: D, out: O }
export const SCHED: ScheduleConfig = { kind: "linear", lr: 5e-2, warmupSteps: 2, totalSteps: 12 }

const problem = (() => {
  const rng = Rng.seeded(99)
  const X = Array.from({ length: N }, () => Float64Array.from({ length: D }, () => rng.float() * 2 - 1))
  const Y = X.map((x) => Float64Array.from({ length: O }, (_, o) => x.reduce((s, v, d) => s + v * Math.sin(o + d), 0) + o))
  return { X, Y }
})()

export interface Cursor { epoch: number; index: number }

export interface Trainer {
  readonly opt: Optimizer
  rng: Rng
  cursor: Cursor
}

export function newTrainer(rt: GpuRuntime, outDim = O): Trainer {
  const opt = new Optimizer(rt, [
    { name: "W", value: rt.upload(new Float32Array(outDim * D), [outDim, D]) },
    { name: "b", value: rt.upload(new Float32Array(outDim), [outDim]), weightDecay: false },
  ], { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 0.5 })
  return { opt, rng: Rng.seeded(SEED), cursor: { epoch: 0, index: 0 } }
}

function nextRow(tr: Trainer): number {
  if (tr.cursor.index === N) tr.cursor = { epoch: tr.cursor.epoch + 1, index: 0 }
  return Rng.seeded(SEED, tr.cursor.epoch).permutation(N)[tr.cursor.index++]!
}

/** One micro-batch: adds weight·gradient into the optimizer's gradients; returns the batch loss. */
export async function microStep(rt: GpuRuntime, tr: Trainer, weight: number): Promise<number> {
  const { opt } = tr
  const W = await rt.read(opt.param("W").value), b = await rt.read(opt.param("b").value)
  const dW = new Float64Array(O * D), db = new Float64Array(O)
  let loss = 0
  for (let k = 0; k < BATCH; k++) {
    const r = nextRow(tr)
    const x = problem.X[r]!, y = problem.Y[r]!
    for (let o = 0; o < O; o++) {
      let pred = b[o]!
      for (let d = 0; d < D; d++) pred += W[o * D + d]! * x[d]!
      const diff = pred - (y[o]! + 0.01 * (tr.rng.float() - 0.5))
      loss += (diff * diff) / BATCH
      const err = (2 * diff) / BATCH
      db[o]! += err
      for (let d = 0; d < D; d++) dW[o * D + d]! += err * x[d]!
    }
  }
  const gW = rt.upload(Float32Array.from(dW), [O, D]), gb = rt.upload(Float32Array.from(db), [O])
  accumulateGrad(rt, opt.grad("W"), gW, weight)
  accumulateGrad(rt, opt.grad("b"), gb, weight)
  rt.release(gW, gb)
  return loss
}

/** One update by hand (no loop): zero, MICRO micro-batches, scheduled AdamW step. */
export async function trainStep(rt: GpuRuntime, tr: Trainer): Promise<void> {
  tr.opt.zeroGrad()
  for (let mb = 0; mb < MICRO; mb++) await microStep(rt, tr, 1 / MICRO)
  await tr.opt.step(learningRate(SCHED, tr.opt.stepCount))
}

export const meta = (tr: Trainer) => ({
  scheduler: { step: tr.opt.stepCount },
  data: { ...tr.cursor },
  rng: [...tr.rng.state()],
  config: { seed: SEED, schedule: { ...SCHED } },
  architecture: ARCH,
})

/** Every bit of the weights and both moments. */
export async function bits(rt: GpuRuntime, tr: Trainer): Promise<number[]> {
  const out: number[] = []
  for (const p of tr.opt.params) for (const t of [p.value, p.m, p.v]) out.push(...(await rt.read(t, "u32")))
  return out
}

/** Mean squared error over the whole problem. */
export async function fullLoss(rt: GpuRuntime, tr: Trainer): Promise<number> {
  const W = await rt.read(tr.opt.param("W").value), b = await rt.read(tr.opt.param("b").value)
  let l = 0
  problem.X.forEach((x, r) => {
    for (let o = 0; o < O; o++) l += (b[o]! + x.reduce((s, v, d) => s + v * W[o * D + d]!, 0) - problem.Y[r]![o]!) ** 2
  })
  return l / N
}

export function dispose(rt: GpuRuntime, tr: Trainer): void {
  tr.opt.dispose()
  rt.release(...tr.opt.params.map((p) => p.value))
}
