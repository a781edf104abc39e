import { describe, expect, test } from "bun:test"
import { type StreamSource, attentionBackward, attentionTrain } from "../../kernels/attention-backward.ts"
import { type TrainAttentionRefOptions, attentionBackwardRef, attentionTrainRef } from "../../kernels/attention-backward.ref.ts"
import { attentionRef } from "../../kernels/attention.ref.ts"
import { gpu } from "../gpu-shared.ts"
import { dotLoss, fdGrad, rand, relErr } from "./gradcheck.ts"

/** Document ids for packed sequences: documents of the given lengths, back to back. */
const docs = (lengths: readonly number[]): Uint32Array => Uint32Array.from(lengths.flatMap((n, i) => Array<number>(n).fill(i)))

describe("training attention: float64 references", () => {
  const fdCases: { name: string; o: TrainAttentionRefOptions }[] = [
    { name: "GQA 4/2, d 8", o: { T: 7, heads: 4, kvHeads: 2, headDim: 8 } },
    { name: "MQA 3/1, d 4, two documents, scale 0.7", o: { T: 7, heads: 3, kvHeads: 1, headDim: 4, scale: 0.7, segments: docs([3, 4]) } },
  ]
  for (const { name, o } of fdCases) {
    test(`analytic backward matches central differences (T 7, ${name})`, () => {
      const { T, heads, kvHeads, headDim } = o
      const q = Float64Array.from(rand(T * heads * headDim, 1, 2)), k = Float64Array.from(rand(T * kvHeads * headDim, 2, 2))
      const v = Float64Array.from(rand(T * kvHeads * headDim, 3)), g = rand(T * heads * headDim, 4)
      const loss = (): number => dotLoss(g, attentionTrainRef(q, k, v, o).o)
      const want = attentionBackwardRef(q, k, v, g, o)
      const eq = relErr(want.dq, fdGrad(q, loss)), ek = relErr(want.dk, fdGrad(k, loss)), ev = relErr(want.dv, fdGrad(v, loss))
      console.log(`attention ref vs finite differences (${name}): dq ${eq.toExponential(2)} dk ${ek.toExponential(2)} dv ${ev.toExponential(2)}`)
      for (const e of [eq, ek, ev]) expect(e).toBeLessThan(1e-7)
    })
  }

  test("forward reference agrees with the inference attention reference", () => {
    const o = { T: 9, heads: 4, kvHeads: 2, headDim: 8 }
    const q = rand(9 * 32, 5), k = rand(9 * 16, 6), v = rand(9 * 16, 7)
    const a = attentionTrainRef(q, k, v, o).o
    const b = attentionRef(q, k, v, { tq: 9, tk: 9, heads: 4, kvHeads: 2, headDim: 8, queryOffset: 0 })
    expect(relErr(a, b)).toBeLessThan(1e-12)
  })
})

describe("training attention on the GPU", () => {
  // Each head size is a new set of shaders, compiled by LLVM at first use (cold, 2 shared cores: ~2 s at
  // d 16, ~20 s at d 64, ~25 s at d 128; Mesa's disk cache makes later runs fast), so the wide heads
  // run only when asked for (ROPEWAY_SLOW_TESTS=1).
  const slow = process.env.ROPEWAY_SLOW_TESTS === "1"
  const cases: { T: number; heads: number; kvHeads: number; headDim: number; lengths?: number[]; slow?: boolean }[] = [
    { T: 37, heads: 4, kvHeads: 2, headDim: 16 }, // GQA
    { T: 150, heads: 2, kvHeads: 2, headDim: 16 }, // several workgroups per head
    { T: 37, heads: 3, kvHeads: 1, headDim: 16, lengths: [5, 20, 12] }, // MQA, packed documents
    { T: 150, heads: 2, kvHeads: 1, headDim: 16, lengths: [1, 60, 30, 59] }, // documents across workgroups
    { T: 100, heads: 4, kvHeads: 2, headDim: 16, lengths: [3, 7, 1, 1, 9, 20, 2, 40, 4, 13] }, // many short documents
    { T: 37, heads: 2, kvHeads: 1, headDim: 24 }, // head not a power of two
    { T: 70, heads: 2, kvHeads: 2, headDim: 64, lengths: [30, 40], slow: true },
    { T: 9, heads: 2, kvHeads: 1, headDim: 128, slow: true }, // widest head tested
  ]
  for (const c of cases) {
    const name = `T ${c.T} heads ${c.heads}/${c.kvHeads} d ${c.headDim}${c.lengths === undefined ? "" : ` documents ${c.lengths.join("+")}`}`
    test.skipIf(c.slow === true && !slow)(`forward (o, lse) and backward (dq, dk, dv) vs float64: ${name}`, async () => {
      const rt = await gpu()
      const { T, heads, kvHeads, headDim } = c
      const q = rand(T * heads * headDim, T + 1, 2), k = rand(T * kvHeads * headDim, T + 2, 2)
      const v = rand(T * kvHeads * headDim, T + 3), dO = rand(T * heads * headDim, T + 4)
      const seg = c.lengths === undefined ? undefined : docs(c.lengths)
      const tq = rt.upload(q, [T, heads * headDim]), tk = rt.upload(k, [T, kvHeads * headDim]), tv = rt.upload(v, [T, kvHeads * headDim])
      const tdo = rt.upload(dO, [T, heads * headDim])
      const tseg = seg === undefined ? undefined : rt.upload(seg)
      const opts = { heads, kvHeads, headDim, ...(tseg === undefined ? {} : { segments: tseg }) }
      const refOpts: TrainAttentionRefOptions = { T, heads, kvHeads, headDim, ...(seg === undefined ? {} : { segments: seg }) }
      const { o, lse } = attentionTrain(rt, tq, tk, tv, opts)
      const { dq, dk, dv } = attentionBackward(rt, tq, tk, tv, o, lse, tdo, opts)
      const fwd = attentionTrainRef(q, k, v, refOpts)
      const bwd = attentionBackwardRef(q, k, v, dO, refOpts)
      const errs = {
        o: relErr(await rt.read(o), fwd.o),
        lse: relErr(await rt.read(lse), fwd.lse),
        dq: relErr(await rt.read(dq), bwd.dq),
        dk: relErr(await rt.read(dk), bwd.dk),
        dv: relErr(await rt.read(dv), bwd.dv),
      }
      console.log(`attention ${name}: ${Object.entries(errs).map(([n, e]) => `${n} ${e.toExponential(2)}`).join(", ")}`)
      for (const e of Object.values(errs)) expect(e).toBeLessThan(1e-5)
      rt.release(tq, tk, tv, tdo, tseg, o, lse, dq, dk, dv)
    }, 60_000)
  }

  test("deterministic bits across runs, a single token, and shape errors", async () => {
    const rt = await gpu()
    const T = 50, heads = 4, kvHeads = 2, headDim = 16
    const tq = rt.upload(rand(T * heads * headDim, 1, 2), [T, heads * headDim]), tk = rt.upload(rand(T * kvHeads * headDim, 2, 2), [T, kvHeads * headDim])
    const tv = rt.upload(rand(T * kvHeads * headDim, 3), [T, kvHeads * headDim]), tdo = rt.upload(rand(T * heads * headDim, 4), [T, heads * headDim])
    const opts = { heads, kvHeads, headDim }
    const run = async (stream?: StreamSource, rows?: number): Promise<Uint32Array[]> => {
      const o2 = { ...opts, ...(stream === undefined ? {} : { stream }), ...(rows === undefined ? {} : { rows }) }
      const { o, lse } = attentionTrain(rt, tq, tk, tv, o2)
      const g = attentionBackward(rt, tq, tk, tv, o, lse, tdo, o2)
      const out = [o, lse, g.dq, g.dk, g.dv]
      const bits = await Promise.all(out.map(async (t) => new Uint32Array((await rt.read(t)).buffer)))
      rt.release(...out)
      return bits
    }
    const a = await run(), b = await run()
    for (let i = 0; i < a.length; i++) expect(b[i]).toEqual(a[i]!)
    // Streamed operands from storage or textures, and any rows per invocation: the same bits.
    for (const [stream, rows] of [["buffer", 8], ["texture", 4], ["buffer", 16]] as const) {
      const c = await run(stream, rows)
      for (let i = 0; i < a.length; i++) expect(c[i]).toEqual(a[i]!)
    }
    expect(() => attentionTrain(rt, tq, tk, tv, { heads: 3, kvHeads, headDim })).toThrow(/multiple of kvHeads/)
    expect(() => attentionTrain(rt, tq, tk, tv, { heads, kvHeads, headDim: 18 })).toThrow(/multiple of 4/)
    rt.release(tq, tk, tv, tdo)

    // One token: o = v, dq = dk = 0 (softmax over one key has zero gradient), dv = dO summed over the group.
    const q1 = rand(heads * headDim, 5), k1 = rand(kvHeads * headDim, 6), v1 = rand(kvHeads * headDim, 7), d1 = rand(heads * headDim, 8)
    const t1 = [rt.upload(q1, [1, heads * headDim]), rt.upload(k1, [1, kvHeads * headDim]), rt.upload(v1, [1, kvHeads * headDim]), rt.upload(d1, [1, heads * headDim])] as const
    const { o, lse } = attentionTrain(rt, t1[0], t1[1], t1[2], opts)
    const g = attentionBackward(rt, t1[0], t1[1], t1[2], o, lse, t1[3], opts)
    const want = attentionBackwardRef(q1, k1, v1, d1, { T: 1, heads, kvHeads, headDim })
    expect(relErr(await rt.read(o), attentionTrainRef(q1, k1, v1, { T: 1, heads, kvHeads, headDim }).o)).toBeLessThan(1e-6)
    expect(Math.max(...(await rt.read(g.dq)).map(Math.abs))).toBeLessThan(1e-6)
    expect(relErr(await rt.read(g.dv), want.dv)).toBeLessThan(1e-6)
    rt.release(...t1, o, lse, g.dq, g.dk, g.dv)
  })
})
