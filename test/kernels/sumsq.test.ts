import { describe, expect, test } from "bun:test"
import { readSumSquares, sumSquares } from "../../kernels/sumsq.ts"
import { clipCoefRef, sumSquaresRef } from "../../kernels/sumsq.ref.ts"
import { Rng } from "../../common/rng.ts"
import { gpu } from "../gpu-shared.ts"

const randn = (rng: Rng, n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => (rng.float() * 2 - 1) * scale)

describe("sumsq", () => {
  test("many tensors (vec4 and scalar, tiny and large) against float64", async () => {
    const rt = await gpu()
    const rng = Rng.seeded(3)
    const host = [1, 3, 4, 17, 1024, 4099, 200_000, 65].map((n, i) => randn(rng, n, i + 1))
    const ts = host.map((h) => rt.upload(h))
    const got = await readSumSquares(rt, ts)
    const want = sumSquaresRef(host)
    // f32 sums of ≤ ~800 terms per invocation, then trees: relative error well under 1e-5.
    expect(Math.abs(got - want) / want).toBeLessThan(1e-5)
    // One tensor alone.
    expect(Math.abs((await readSumSquares(rt, [ts[2]!])) - sumSquaresRef([host[2]!])) / sumSquaresRef([host[2]!])).toBeLessThan(1e-6)
    rt.release(...ts)
  })

  test("deterministic: the same bits again, with other work batched around it", async () => {
    const rt = await gpu()
    const rng = Rng.seeded(4)
    const host = [300_001, 4096, 5].map((n) => randn(rng, n))
    const ts = host.map((h) => rt.upload(h))
    const first = await readSumSquares(rt, ts)
    const noise = rt.upload(randn(rng, 1000))
    const r1 = sumSquares(rt, [noise])
    const r2 = sumSquares(rt, ts)
    const again = (await rt.read(r2))[0]!
    expect(Object.is(again, first)).toBe(true)
    rt.release(...ts, noise, r1, r2)
  })

  test("no tensors → 0; clip coefficient as torch's clip_grad_norm_", async () => {
    const rt = await gpu()
    expect(await readSumSquares(rt, [])).toBe(0)
    expect(clipCoefRef(0.5, 1)).toBe(1)
    expect(clipCoefRef(4, 1)).toBeCloseTo(1 / (4 + 1e-6), 15)
  })
})
