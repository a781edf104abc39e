import { describe, expect, test } from "bun:test"
import { learningRate, schedule } from "../../training/schedule.ts"

// Pinned values: transformers' get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup
// lr_lambda formulas evaluated in Python (float64) and multiplied by the base lr, as LambdaLR does.
describe("schedule", () => {
  test("linear with warmup (LongRoPE: 2e-5, warmup 20, 400 steps)", () => {
    const lr = schedule({ kind: "linear", lr: 2e-5, warmupSteps: 20, totalSteps: 400 })
    const pinned: [number, number][] = [
      [0, 0], [1, 1.0000000000000002e-6], [7, 7e-6], [19, 1.9e-5], [20, 2e-5], [21, 1.994736842105263e-5],
      [137, 1.3842105263157896e-5], [399, 5.263157894736842e-8], [400, 0],
    ]
    for (const [s, want] of pinned) expect(lr(s)).toBeCloseTo(want, 18)
    expect(lr(1000)).toBe(0)
  })

  test("cosine with warmup (LongRoPE2: 2e-5, warmup 40, 2250 steps)", () => {
    const lr = schedule({ kind: "cosine", lr: 2e-5, warmupSteps: 40, totalSteps: 2250 })
    const pinned: [number, number][] = [
      [0, 0], [13, 6.5000000000000004e-6], [40, 2e-5], [41, 1.9999989896190967e-5], [592, 1.707609191100076e-5],
      [1145, 1e-5], [2000, 6.248697997041219e-7], [2249, 1.0103809032768753e-11], [2250, 0],
    ]
    for (const [s, want] of pinned) expect(lr(s)).toBeCloseTo(want, 18)
    expect(lr(3000)).toBeCloseTo(0, 18) // clamped past the end (HF's curve would rise again)
  })

  test("minimum lr, constant, and no warmup", () => {
    // HF cosine_with_min_lr: min + (lr − min)·λ after warmup.
    const cos = { kind: "cosine", lr: 2e-5, warmupSteps: 40, totalSteps: 2250, minLr: 1e-6 } as const
    expect(learningRate(cos, 1000)).toBeCloseTo(1.2444328142761749e-5, 17)
    expect(learningRate(cos, 2250)).toBeCloseTo(1e-6, 18)
    expect(learningRate(cos, 20)).toBeCloseTo(1e-5, 18) // warmup still starts from 0
    const lin = { kind: "linear", lr: 1e-3, totalSteps: 10, minLr: 1e-4 } as const
    expect(learningRate(lin, 0)).toBe(1e-3)
    expect(learningRate(lin, 5)).toBeCloseTo(5.5e-4, 15)
    expect(learningRate(lin, 10)).toBeCloseTo(1e-4, 15)
    const c = schedule({ kind: "constant", lr: 1e-6, warmupSteps: 4 })
    expect([0, 2, 4, 100].map(c)).toEqual([0, 5e-7, 1e-6, 1e-6])
  })

  test("bad configs and steps are rejected, naming the field", () => {
    expect(() => schedule({ kind: "linear", lr: 1e-3 })).toThrow(/schedule.totalSteps/)
    expect(() => schedule({ kind: "cosine", lr: 1e-3, totalSteps: 10, warmupSteps: 11 })).toThrow(/schedule.warmupSteps/)
    expect(() => schedule({ kind: "linear", lr: 1e-3, totalSteps: 10, minLr: 1 })).toThrow(/schedule.minLr/)
    expect(() => schedule({ kind: "constant", lr: -1 })).toThrow(/schedule.lr/)
    expect(() => learningRate({ kind: "constant", lr: 1 }, 1.5)).toThrow(/non-negative integer/)
  })
})
