/** Dropout beyond the kernel table's exact cases: the fraction kept, masks per seed, bad arguments. */
import { describe, expect, test } from "bun:test"
import { dropout } from "../../kernels/dropout.ts"
import { gpu } from "../gpu-shared.ts"

describe("dropout", () => {
  test("keeps about 1 − p of the elements; another seed gives another mask; the same seed the same", async () => {
    const rt = await gpu()
    const n = 200_000
    const t = rt.upload(new Float32Array(n).fill(1))
    const a = await rt.read(dropout(rt, t, 0.3, 1))
    const b = await rt.read(dropout(rt, t, 0.3, 2))
    const a2 = await rt.read(dropout(rt, t, 0.3, 1))
    const keptA = a.reduce((s, v) => s + (v !== 0 ? 1 : 0), 0) / n
    // binomial std at n = 2e5 is ~0.001
    expect(Math.abs(keptA - 0.7)).toBeLessThan(0.006)
    expect(a.every((v) => v === 0 || Math.abs(v - 1 / 0.7) < 1e-6)).toBe(true)
    let differ = 0
    for (let i = 0; i < n; i++) if ((a[i] === 0) !== (b[i] === 0)) differ++
    // two independent masks disagree on 2·0.3·0.7 = 42% of elements
    expect(differ / n).toBeGreaterThan(0.38)
    expect(Array.from(a2)).toEqual(Array.from(a))
    rt.release(t)
  })

  test("p outside [0, 1) and a seed that is not a u32 are refused", async () => {
    const rt = await gpu()
    const t = rt.upload(new Float32Array(4))
    expect(() => dropout(rt, t, 1, 0)).toThrow(/p must be in \[0, 1\)/)
    expect(() => dropout(rt, t, 0.1, -1)).toThrow(/32-bit unsigned/)
    rt.release(t)
  })
})
