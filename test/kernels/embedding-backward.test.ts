import { describe, expect, test } from "bun:test"
import { embeddingBackward } from "../../kernels/embedding-backward.ts"
import { embeddingBackwardRef } from "../../kernels/embedding-backward.ref.ts"
import { embedRef } from "../../kernels/embedding.ref.ts"
import { gpu } from "../gpu-shared.ts"
import { dotLoss, fdGrad, rand, relErr } from "./gradcheck.ts"

/** Ids with many repeats (a small alphabet plus a few out-of-vocabulary ids). */
function idsFor(T: number, V: number, seed: number, alphabet: number): Uint32Array {
  const r = rand(T, seed)
  return Uint32Array.from(r, (x, t) => (t % 11 === 10 ? V + t : Math.floor(((x + 1) / 2) * alphabet) * Math.floor(V / alphabet)))
}

describe("embedding backward", () => {
  test("float64 reference matches central differences of embedRef (T 7, V 30, D 24)", () => {
    const T = 7, V = 30, D = 24
    const table = Float64Array.from(rand(V * D, 1)), g = rand(T * D, 2)
    const ids = Uint32Array.from([3, 5, 3, 29, 31, 3, 0])
    const fd = fdGrad(table, () => dotLoss(g, embedRef(table, V, D, ids)))
    const e = relErr(embeddingBackwardRef(new Float64Array(V * D), V, D, ids, g), fd)
    console.log(`embedding ref vs finite differences: ${e.toExponential(2)}`)
    expect(e).toBeLessThan(1e-8)
  })

  const cases = [
    { T: 7, V: 300, D: 24, alphabet: 3, maxBindingBytes: undefined },
    { T: 37, V: 300, D: 40, alphabet: 5, maxBindingBytes: 8 * 160 * 3 }, // row ranges of 24 rows
    { T: 37, V: 301, D: 37, alphabet: 300, maxBindingBytes: undefined }, // scalar path
    { T: 200, V: 300, D: 72, alphabet: 7, maxBindingBytes: undefined }, // several column blocks, long chains
  ]
  for (const c of cases) {
    test(`GPU vs float64: T ${c.T} V ${c.V} D ${c.D}, ${c.alphabet} distinct ids${c.maxBindingBytes === undefined ? "" : ", split table"}`, async () => {
      const rt = await gpu()
      const { T, V, D } = c
      const dTable0 = rand(V * D, 3), dOut = rand(T * D, 4)
      const ids = idsFor(T, V, T + D, c.alphabet)
      const tTable = rt.upload(dTable0, [V, D]), tIds = rt.upload(ids), tOut = rt.upload(dOut, [T, D])
      embeddingBackward(rt, tTable, tIds, tOut, c.maxBindingBytes === undefined ? {} : { maxBindingBytes: c.maxBindingBytes })
      const got = await rt.read(tTable)
      const e = relErr(got, embeddingBackwardRef(dTable0, V, D, ids, dOut))
      console.log(`embedding backward T ${T} V ${V} D ${D}: ${e.toExponential(2)}`)
      expect(e).toBeLessThan(1e-6)
      rt.release(tTable, tIds, tOut)
    })
  }

  for (const D of [40, 37]) {
    test(`the two methods (per-token chains, per-row scans) give identical bits (D ${D})`, async () => {
      const rt = await gpu()
      const T = 90, V = D === 40 ? 20 : 150 // D 37: enough rows for two aligned ranges
      const ids = idsFor(T, V, 12, 6), dOut = rand(T * D, 13, 1e3), dTable0 = rand(V * D, 14)
      const run = async (method: "links" | "rows", maxBindingBytes?: number): Promise<Float32Array> => {
        const tTable = rt.upload(dTable0, [V, D]), tIds = rt.upload(ids), tOut = rt.upload(dOut, [T, D])
        embeddingBackward(rt, tTable, tIds, tOut, maxBindingBytes === undefined ? { method } : { method, maxBindingBytes })
        const r = await rt.read(tTable)
        rt.release(tTable, tIds, tOut)
        return r
      }
      const links = await run("links")
      expect(relErr(links, embeddingBackwardRef(dTable0, V, D, ids, dOut))).toBeLessThan(1e-6)
      expect(await run("rows")).toEqual(links)
      // Row ranges of 64 rows (D 37: 148-byte rows align every 64) or 8 rows (D 40: 160-byte rows).
      expect(await run("rows", D === 40 ? 8 * 160 : 64 * 148)).toEqual(links)
    })
  }

  test("deterministic: repeated runs give identical bits", async () => {
    const rt = await gpu()
    const T = 64, V = 16, D = 8
    const ids = idsFor(T, V, 9, 4), dOut = rand(T * D, 10, 1e3)
    const run = async (): Promise<Float32Array> => {
      const tTable = rt.upload(new Float32Array(V * D), [V, D]), tIds = rt.upload(ids), tOut = rt.upload(dOut, [T, D])
      embeddingBackward(rt, tTable, tIds, tOut)
      const r = await rt.read(tTable)
      rt.release(tTable, tIds, tOut)
      return r
    }
    const a = await run()
    expect(await run()).toEqual(a)
  })
})
