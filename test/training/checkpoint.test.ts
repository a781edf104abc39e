import { afterAll, describe, expect, test } from "bun:test"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Rng, type RngState } from "../../common/rng.ts"
import { Checkpoint } from "../../common/safetensors.ts"
import {
  type Json, OPTIMIZER_FILE, STATE_FILE, latestTrainingCheckpoint, listTrainingCheckpoints, readTrainingCheckpoint,
  restoreTraining, saveTraining,
} from "../../training/checkpoint.ts"
import { gpu } from "../gpu-shared.ts"
import { ARCH, type Cursor, D, O, bits, dispose, fullLoss, meta, newTrainer, trainStep } from "./least-squares.ts"

const roots: string[] = []
const freshRoot = (): string => {
  const r = mkdtempSync(join(tmpdir(), "ropeway-ckpt-"))
  roots.push(r)
  return r
}
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true })
})

describe("training checkpoints", () => {
  test("save → load → continue is bit-identical to an uninterrupted run", async () => {
    const rt = await gpu()
    const full = newTrainer(rt)
    for (let s = 0; s < 10; s++) await trainStep(rt, full)
    const want = await bits(rt, full)
    const untrained = newTrainer(rt)
    expect(await fullLoss(rt, full)).toBeLessThan(0.8 * (await fullLoss(rt, untrained))) // it does optimise something
    dispose(rt, untrained)

    const root = freshRoot()
    const first = newTrainer(rt)
    for (let s = 0; s < 5; s++) await trainStep(rt, first)
    const dir = await saveTraining(root, first.opt, meta(first))
    dispose(rt, first) // the process "dies"

    const resumed = newTrainer(rt)
    const ckpt = restoreTraining(latestTrainingCheckpoint(root)!, resumed.opt, ARCH)
    expect(ckpt.dir).toBe(dir)
    expect(ckpt.step).toBe(5)
    expect(ckpt.meta.scheduler).toEqual({ step: 5 })
    resumed.rng = Rng.fromState(ckpt.meta.rng as unknown as RngState)
    resumed.cursor = ckpt.meta.data as unknown as Cursor
    for (let s = 0; s < 5; s++) await trainStep(rt, resumed)
    expect(resumed.opt.stepCount).toBe(10)
    const got = await bits(rt, resumed)
    expect(got.length).toBe(want.length)
    expect(got.every((b, i) => b === want[i])).toBe(true)
    // The weights file is an ordinary HF-style model.safetensors.
    expect(Checkpoint.open(dir).read("W").length).toBe(O * D)
    dispose(rt, full)
    dispose(rt, resumed)
  })

  test("a crash between writing and renaming leaves the earlier checkpoint intact and loadable", async () => {
    const rt = await gpu()
    const root = freshRoot()
    const tr = newTrainer(rt)
    for (let s = 0; s < 3; s++) await trainStep(rt, tr)
    const good = await saveTraining(root, tr.opt, meta(tr))
    const goodBits = await bits(rt, tr)
    for (let s = 0; s < 3; s++) await trainStep(rt, tr)
    let sawTmp = false
    const crash = saveTraining(root, tr.opt, meta(tr), {
      beforeCommit: (tmp) => {
        sawTmp = existsSync(join(tmp, STATE_FILE)) && existsSync(join(tmp, OPTIMIZER_FILE))
        throw new Error("simulated crash")
      },
    })
    await expect(crash).rejects.toThrow(/simulated crash/)
    expect(sawTmp).toBe(true)
    expect(listTrainingCheckpoints(root).map((c) => c.step)).toEqual([3])
    expect(readdirSync(root).filter((n) => n.startsWith("."))).toEqual([])
    // A crash that killed the process leaves a temp folder: readers ignore it, the next save removes it.
    mkdirSync(join(root, ".tmp-step-00000006-12345"))
    writeFileSync(join(root, ".tmp-step-00000006-12345", "model.safetensors"), "half")
    expect(latestTrainingCheckpoint(root)).toBe(good)
    const fresh = newTrainer(rt)
    restoreTraining(good, fresh.opt, ARCH)
    expect(await bits(rt, fresh)).toEqual(goodBits)
    await saveTraining(root, tr.opt, meta(tr))
    expect(readdirSync(root).sort()).toEqual(["step-00000003", "step-00000006"])
    dispose(rt, tr)
    dispose(rt, fresh)
  })

  test("keeps the last k; re-saving a step replaces it", async () => {
    const rt = await gpu()
    const root = freshRoot()
    const tr = newTrainer(rt)
    for (let s = 0; s < 5; s++) {
      await trainStep(rt, tr)
      await saveTraining(root, tr.opt, meta(tr), { keep: 2 })
    }
    expect(listTrainingCheckpoints(root).map((c) => c.step)).toEqual([4, 5])
    await saveTraining(root, tr.opt, { ...meta(tr), data: { note: "again" } }, { keep: 2 })
    expect(readTrainingCheckpoint(latestTrainingCheckpoint(root)!).meta.data).toEqual({ note: "again" })
    expect(readdirSync(root).sort()).toEqual(["step-00000004", "step-00000005"])
    // A crash between the two renames of a re-save leaves the old copy set aside; the next save puts it back.
    renameSync(join(root, "step-00000005"), join(root, ".old-step-00000005-4242"))
    await trainStep(rt, tr)
    await saveTraining(root, tr.opt, meta(tr), { keep: 3 })
    expect(readdirSync(root).sort()).toEqual(["step-00000004", "step-00000005", "step-00000006"])
    expect(readTrainingCheckpoint(join(root, "step-00000005")).meta.data).toEqual({ note: "again" })
    dispose(rt, tr)
  })

  test("another architecture, a corrupt file or a non-checkpoint fail with errors naming the file", async () => {
    const rt = await gpu()
    const root = freshRoot()
    const tr = newTrainer(rt)
    await trainStep(rt, tr)
    const dir = await saveTraining(root, tr.opt, meta(tr))
    const wide = newTrainer(rt, O + 1)
    expect(() => restoreTraining(dir, wide.opt)).toThrow(
      `${join(dir, "model.safetensors")}: checkpoint from another architecture: "W" has shape [3×8] in the checkpoint, expected [4×8]; "b" has shape [3] in the checkpoint, expected [4]`,
    )
    expect(() => readTrainingCheckpoint(dir, { architecture: { in: D, out: O + 1 } as Json })).toThrow(
      `${join(dir, STATE_FILE)}: checkpoint from another architecture: architecture.out is 3 in the checkpoint, expected 4`,
    )
    const opt = join(dir, OPTIMIZER_FILE)
    const bytes = readFileSync(opt)
    bytes[bytes.length - 1]! ^= 1
    writeFileSync(opt, bytes)
    expect(() => readTrainingCheckpoint(dir)).toThrow(`${opt}: checksum differs`)
    expect(() => readTrainingCheckpoint(root)).toThrow(/not a training checkpoint/)
    dispose(rt, tr)
    dispose(rt, wide)
  })
})
