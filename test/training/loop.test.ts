import { afterAll, describe, expect, test } from "bun:test"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Rng, type RngState } from "../../common/rng.ts"
import { latestTrainingCheckpoint, listTrainingCheckpoints, restoreTraining } from "../../training/checkpoint.ts"
import { loopPosition, trainLoop } from "../../training/loop.ts"
import { learningRate } from "../../training/schedule.ts"
import { gpu } from "../gpu-shared.ts"
import { ARCH, type Cursor, MICRO, SCHED, type Trainer, bits, dispose, fullLoss, meta, microStep, newTrainer, trainStep } from "./least-squares.ts"

const roots: string[] = []
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true })
})

describe("trainLoop", () => {
  test("a run killed mid-way and resumed from its last checkpoint reaches the same bits", async () => {
    const rt = await gpu()
    const root = mkdtempSync(join(tmpdir(), "ropeway-loop-"))
    roots.push(root)
    const loopFor = (tr: Trainer, extra: { startStep?: number; killAt?: number } = {}) =>
      trainLoop({
        optimizer: tr.opt, schedule: SCHED, accumulation: MICRO,
        ...(extra.startStep === undefined ? {} : { startStep: extra.startStep }),
        microStep: async ({ step, weight }) => {
          if (step === extra.killAt) throw new Error("killed")
          return microStep(rt, tr, weight)
        },
        checkpoint: { root, every: 4, keep: 2, meta: () => { const { scheduler: _, ...m } = meta(tr); return m } },
      })

    // Uninterrupted, without checkpoints: the loop is the same as updates by hand.
    const byHand = newTrainer(rt)
    for (let s = 0; s < 12; s++) await trainStep(rt, byHand)
    const want = await bits(rt, byHand)

    const first = newTrainer(rt)
    await expect(loopFor(first, { killAt: 9 })).rejects.toThrow("killed")
    expect(listTrainingCheckpoints(root).map((c) => c.step)).toEqual([4, 8])
    dispose(rt, first)

    const resumed = newTrainer(rt)
    const ckpt = restoreTraining(latestTrainingCheckpoint(root)!, resumed.opt, ARCH)
    resumed.rng = Rng.fromState(ckpt.meta.rng as unknown as RngState)
    resumed.cursor = ckpt.meta.data as unknown as Cursor
    expect(loopPosition(ckpt)).toBe(8)
    const logs = await loopFor(resumed, { startStep: loopPosition(ckpt) })
    expect(logs.map((l) => l.step)).toEqual([9, 10, 11, 12])
    expect(logs.map((l) => l.lr)).toEqual([8, 9, 10, 11].map((s) => learningRate(SCHED, s)))
    expect(logs.at(-1)!.checkpoint).toBe(join(root, "step-00000012"))
    expect(logs.every((l) => Number.isFinite(l.loss) && l.gradNorm > 0 && !l.skipped)).toBe(true)
    expect((await bits(rt, resumed)).every((b, i) => b === want[i])).toBe(true)
    const untrained = newTrainer(rt)
    expect(await fullLoss(rt, resumed)).toBeLessThan(0.8 * (await fullLoss(rt, untrained)))
    dispose(rt, untrained)
    dispose(rt, byHand)
    dispose(rt, resumed)
  })

  test("bad options are rejected", async () => {
    const rt = await gpu()
    const tr = newTrainer(rt)
    const base = { optimizer: tr.opt, schedule: SCHED, microStep: async () => 0 }
    await expect(trainLoop({ ...base, accumulation: 0 })).rejects.toThrow(/accumulation must be/)
    await expect(trainLoop({ ...base, schedule: { kind: "linear", lr: 1 } })).rejects.toThrow(/schedule.totalSteps/)
    await expect(trainLoop({ ...base, checkpoint: { root: "/nonexistent", every: 0, meta: () => ({}) } })).rejects.toThrow(/every must be/)
    dispose(rt, tr)
  })
})
