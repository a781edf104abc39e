import { describe, expect, test } from "bun:test"
import { embed } from "../../kernels/embedding.ts"
import { embedRef } from "../../kernels/embedding.ref.ts"
import { gpu } from "../gpu-shared.ts"

const rand = (n: number, seed: number): Float32Array => {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = (s / 2 ** 32) * 2 - 1
  }
  return out
}

describe("embed", () => {
  const cases = [
    { V: 50, D: 64, T: 13, ids: [] as number[] },
    { V: 37, D: 36, T: 70, ids: [] },
    { V: 11, D: 7, T: 9, ids: [] }, // scalar path
    { V: 100, D: 12, T: 30, ids: [], maxBindingBytes: 1024 }, // 48-byte rows, 256-byte alignment: 7 chunks of 16 rows
    { V: 100, D: 5, T: 30, ids: [], maxBindingBytes: 1280 }, // 20-byte rows: 2 chunks of 64 rows (scalar path)
  ]
  for (const c of cases) {
    test(`V ${c.V} D ${c.D} T ${c.T}${c.maxBindingBytes ? ` chunks ≤ ${c.maxBindingBytes} B` : ""}`, async () => {
      const rt = await gpu()
      const table = rand(c.V * c.D, c.V + c.D)
      // Ids cover the first/last rows, every chunk, and two out-of-vocabulary ids.
      const ids = Uint32Array.from({ length: c.T }, (_, t) => (t === 0 ? c.V - 1 : t === 1 ? c.V : t === 2 ? 0xffffffff : (t * 7919) % c.V))
      const tt = rt.upload(table, [c.V, c.D]), ti = rt.upload(ids)
      // Pre-fill the pooled output buffer with garbage so the zero rows are really written.
      rt.release(rt.upload(new Float32Array(c.T * c.D).fill(9), [c.T, c.D]))
      const opts = c.maxBindingBytes === undefined ? {} : { maxBindingBytes: c.maxBindingBytes }
      const out = embed(rt, tt, ti, opts)
      expect(out.shape).toEqual([c.T, c.D])
      const got = await rt.read(out)
      const want = embedRef(table, c.V, c.D, ids)
      for (let k = 0; k < want.length; k++) if (got[k] !== want[k]) throw new Error(`element ${k}: ${got[k]} ≠ ${want[k]}`)
      rt.release(tt, ti, out)
    })
  }

  test("rejects non-u32 ids", async () => {
    const rt = await gpu()
    const tt = rt.upload(new Float32Array(8), [2, 4]), ti = rt.upload(new Float32Array(2))
    expect(() => embed(rt, tt, ti)).toThrow(/u32/)
    rt.release(tt, ti)
  })
})
