import { describe, expect, test } from "bun:test"
import { Rng } from "../../common/rng.ts"
import { addLoraForward, createLora, loraInitialValues, loraParams, mergeLora, mergeLoraHost, releaseLora } from "../../training/lora.ts"
import { Optimizer } from "../../training/optimizer.ts"
import { gpu } from "../gpu-shared.ts"

const rand = (rng: Rng, n: number): Float32Array => Float32Array.from({ length: n }, () => rng.float() * 2 - 1)
const maxErr = (got: ArrayLike<number>, want: ArrayLike<number>): number => {
  let e = 0
  for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!))
  return e
}

const IN = 24, OUT = 20, R = 4, T = 5
const cfg = { rank: R, alpha: 8, seed: 3 }

describe("LoRA", () => {
  test("init: B = 0, A seeded per layer within ±1/√in; merging at init changes nothing", async () => {
    const rt = await gpu()
    const v1 = loraInitialValues("q_proj", IN, OUT, cfg), v2 = loraInitialValues("q_proj", IN, OUT, cfg)
    expect([...v1.a]).toEqual([...v2.a])
    expect([...loraInitialValues("k_proj", IN, OUT, cfg).a]).not.toEqual([...v1.a])
    expect(v1.b.every((x) => x === 0)).toBe(true)
    expect(v1.a.every((x) => Math.abs(x) <= 1 / Math.sqrt(IN))).toBe(true)
    const w = rand(Rng.seeded(1), OUT * IN)
    const l = createLora(rt, "q_proj", IN, OUT, cfg)
    expect(l.scaling).toBe(2)
    const tw = rt.upload(w, [OUT, IN])
    mergeLora(rt, tw, l)
    expect([...(await rt.read(tw))]).toEqual([...w])
    expect(() => createLora(rt, "x", IN, OUT, { ...cfg, rank: 0 })).toThrow(/rank must be/)
    rt.release(tw)
    releaseLora(rt, l)
  })

  test("merge and forward against float64, and forward through the merged weight agrees", async () => {
    const rt = await gpu()
    const rng = Rng.seeded(2)
    const w = rand(rng, OUT * IN), b = rand(rng, OUT * R), x = rand(rng, T * IN)
    const l = createLora(rt, "o_proj", IN, OUT, cfg)
    rt.write(l.b, b)
    const a = await rt.read(l.a)
    const merged = mergeLoraHost(w, a, b, OUT, IN, R, l.scaling)
    const tw = rt.upload(w, [OUT, IN])
    mergeLora(rt, tw, l)
    // Sums of 4 products ≤ 0.2 each, times 2, added to |w| ≤ 1: a few f32 ulps.
    expect(maxErr(await rt.read(tw), merged)).toBeLessThan(1e-6)
    // y = x·Wᵀ + lora(x) equals x·W'ᵀ.
    const y = new Float32Array(T * OUT), yMerged = new Float64Array(T * OUT)
    for (let t = 0; t < T; t++) {
      for (let o = 0; o < OUT; o++) {
        let s = 0, sm = 0
        for (let i = 0; i < IN; i++) {
          s += x[t * IN + i]! * w[o * IN + i]!
          sm += x[t * IN + i]! * merged[o * IN + i]!
        }
        y[t * OUT + o] = s
        yMerged[t * OUT + o] = sm
      }
    }
    const ty = rt.upload(y, [T, OUT]), tx = rt.upload(x, [T, IN])
    addLoraForward(rt, ty, tx, l)
    expect(maxErr(await rt.read(ty), yMerged)).toBeLessThan(1e-5) // 24-term dot products of values ≤ ~2
    rt.release(tw, ty, tx)
    releaseLora(rt, l)
  })

  test("adapter parameters plug into the optimizer under PEFT names", async () => {
    const rt = await gpu()
    const l = createLora(rt, "layers.0.q_proj", IN, OUT, cfg)
    const opt = new Optimizer(rt, loraParams(l), { maxGradNorm: 1 })
    expect(opt.params.map((p) => p.name)).toEqual(["layers.0.q_proj.lora_A.weight", "layers.0.q_proj.lora_B.weight"])
    rt.write(opt.grad("layers.0.q_proj.lora_B.weight"), Float32Array.from({ length: OUT * R }, () => 1))
    await opt.step(1e-3)
    // First Adam step: every B entry moves by −lr; A had zero gradient and no decay, so it stays.
    expect(maxErr(await rt.read(l.b), new Float32Array(OUT * R).fill(-1e-3))).toBeLessThan(1e-9)
    expect([...(await rt.read(l.a))]).toEqual([...loraInitialValues("layers.0.q_proj", IN, OUT, cfg).a])
    opt.dispose()
    releaseLora(rt, l)
  })
})
