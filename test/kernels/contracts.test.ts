/**
 * Kernel checks that are not per-op comparisons with a reference (those are the table, table.test.ts):
 * bad input rejected with a clear message, weight storage and texture limits, defaults that follow the
 * adapter profile, memory, a release-order regression, precision helpers, and the table's own
 * comparison failing when it should.
 */
import { afterEach, describe, expect, test } from "bun:test"
import { ADAMW_DEFAULTS, adamwStep, adamwUniforms } from "../../kernels/adamw.ts"
import { add } from "../../kernels/add.ts"
import { attentionTrain } from "../../kernels/attention-backward.ts"
import { appendKv, attention, createKvCache, pageQuantum, prepareAttention, releaseKvCache } from "../../kernels/attention.ts"
import { embed } from "../../kernels/embedding.ts"
import { logprobsFromLogits } from "../../kernels/logprobs.ts"
import { cpuVariantName, linear, matmul, parseCpuVariant, prepareWeight, releaseWeight, setMatmulVariant } from "../../kernels/matmul.ts"
import { defaultInvFreq } from "../../kernels/rope-table.ts"
import { readSumSquares } from "../../kernels/sumsq.ts"
import { applyRope, releaseRopeTable, turnsFixedPoint, uploadRopeTable } from "../../kernels/rope.ts"
import { ropeRef } from "../../kernels/rope.ref.ts"
import { attentionCase, defaultAttentionVariant } from "../../kernels/testing/cases/attention.ts"
import { defaultLinearVariant, linearCase } from "../../kernels/testing/cases/matmul.ts"
import { START_TOKEN_POSITIONS, startTokensInput, startTokensTable, wrapAngle } from "../../kernels/testing/cases/rope.ts"
import { compare, describeComparison, expectClose } from "../../kernels/testing/compare.ts"
import { type KernelCase, type Variant, checkCase, checkOutputs, expectSameOutputs, withProfile } from "../../kernels/testing/kernel-case.ts"
import { rand } from "../../kernels/testing/random.ts"
import { GpuRuntime } from "../../kernels/runtime.ts"
import { gpu } from "../gpu-shared.ts"

afterEach(() => setMatmulVariant(undefined))

describe("the table's comparison", () => {
  test("names the output, its max abs and rel errors and the worst element by row and column", () => {
    const c = compare([1, 2, 3, 4.5], [1, 2, 3, 4], { abs: 0.1 })
    expect(c.ok).toBe(false)
    expect(describeComparison("y", c, { abs: 0.1 }, [2, 2])).toBe('y: max abs error 5.00e-1, max rel error 1.25e-1 (tolerance abs 1.00e-1); worst at [1, 1]: got 4.5, want 4, bound 1.00e-1')
    expect(compare([1, NaN], [1, 2], { abs: 1e9 }).ok).toBe(false)
    expect(compare([1, 2], [1, 2, 3], { abs: 1 }).ok).toBe(false)
    expect(compare([1, -Infinity, 0], [1, -Infinity, -0], {}).ok).toBe(true)
    expect(compare([1.5e-6], [0], { rel: 1e-6, floor: 1 }).ok).toBe(false)
    expect(compare([100.0001], [100], { rel: 2e-6 }).ok).toBe(true)
    expect(() => expectClose("x", [0.2], [0.1], { scaled: 0.5 })).toThrow("x: max abs error 1.00e-1")
  })

  test("a table case fails against a wrong reference: the kernel at scale 0.5, the reference at 0.25", async () => {
    const rt = await gpu()
    const right = attentionCase({ heads: 1, kvHeads: 1, headDim: 16, t: 7, scale: 0.5, rows: 2 })
    const wrong = attentionCase({ heads: 1, kvHeads: 1, headDim: 16, t: 7, scale: 0.5, rows: 2, refScale: 0.25 })
    for (const kernel of ["cpu", "gpu"] as const) {
      const v = { name: `${kernel} kernel`, kernel }
      await checkCase(rt, "attention", right, v)
      const failure = await checkCase(rt, "attention", wrong, v).then(() => undefined, (e: Error) => e.message)
      expect(failure).toMatch(/^attention \[\w+ kernel, f32\] .* on .*\n {2}o: max abs error \S+, max rel error \S+ \(tolerance abs 1\.00e-5\); worst at \[\d+, \d+\]: got \S+, want \S+, bound 1\.00e-5$/)
      // Far past the tolerance, not at its edge.
      expect(Number(/max abs error ([^,]+)/.exec(failure ?? "")?.[1])).toBeGreaterThan(100 * 1e-5)
    }
  })
})

describe("launchers, as bench/ runs them", () => {
  /** Runs a launch six times: the pool must end where it was after one run, the outputs still the reference's. */
  async function repeated<V extends Variant>(c: KernelCase<V>, v: V): Promise<void> {
    const rt = await gpu()
    const launch = c.setup(rt, v)
    launch.run()
    await rt.sync()
    const live = rt.stats.liveBytes
    for (let i = 0; i < 5; i++) launch.run()
    await rt.sync()
    expect(rt.stats.liveBytes).toBe(live)
    checkOutputs(c.name, await launch.read(), c.expected())
    launch.release()
  }
  test("repeated runs free the previous outputs and still match the reference", async () => {
    const { profile } = (await gpu()).adapter
    await repeated(linearCase({ m: 37, n: 21, k: 19, bias: true }), defaultLinearVariant(profile))
    await repeated(attentionCase({ heads: 2, kvHeads: 1, headDim: 16, t: 20, chunks: [13, 7], rows: 2 }), defaultAttentionVariant(profile))
  })
})

describe("sumsq's read helper", () => {
  test("readSumSquares reads the one number sumSquares leaves: 0 for no tensors", async () => {
    const rt = await gpu()
    expect(await readSumSquares(rt, [])).toBe(0)
    const t = rt.upload(Float32Array.of(1, -2, 3))
    expect(await readSumSquares(rt, [t])).toBe(14)
    rt.release(t)
  })
})

describe("bad input is rejected with a clear message", () => {
  test("matmul and linear", async () => {
    const rt = await gpu()
    const w = prepareWeight(rt, rand(6 * 8, 1), 6, 8)
    const bad = rt.upload(new Float32Array(7 * 2), [2, 7])
    expect(() => linear(rt, bad, w)).toThrow("expected last dim 8")
    const a = rt.tensor([3, 4]), b = rt.tensor([5, 2])
    for (const variant of ["cpu", "gpu"] as const) expect(() => matmul(rt, a, b, { variant })).toThrow("inner dims differ")
    rt.release(bad, a, b)
    releaseWeight(rt, w)
  })

  test("attention and its KV cache", async () => {
    const rt = await gpu()
    expect(() => createKvCache(rt, 8, 1, 18)).toThrow(/multiple of 4/)
    expect(() => createKvCache(rt, 8, 1, 260)).toThrow(/multiple of 4/)
    const cache = createKvCache(rt, 8, 2, 16)
    const q = rt.tensor([4, 3 * 16])
    expect(() => attention(rt, q, cache, { heads: 3, queryOffset: 0 })).toThrow(/multiple of the cache's kvHeads/)
    const q4 = rt.tensor([4, 4 * 16])
    expect(() => attention(rt, q4, cache, { heads: 4, queryOffset: 5 })).toThrow(/capacity/)
    const k = rt.tensor([4, 32])
    expect(() => appendKv(rt, cache, k, k, 6)).toThrow(/capacity/)
    expect(() => appendKv(rt, cache, q4, q4, 0)).toThrow(/shape/)
    const q2 = rt.tensor([4, 2 * 16])
    expect(() => attention(rt, q2, cache, { heads: 2, queryOffset: 0 })).toThrow(/append them first/)
    expect(() => createKvCache(rt, 8, 1, 16, { pageRows: 0 })).toThrow(/positive integer/)
    // a page size asked for is cut to the capacity and rounded up to the kernel's key tile
    const tile = pageQuantum(rt.adapter.profile, 16)
    expect(createKvCache(rt, 200, 1, 16, { pageRows: 6 }).pageRows).toBe(Math.ceil(6 / tile) * tile)
    expect(createKvCache(rt, 8, 1, 16, { pageRows: 100 }).pageRows).toBe(Math.ceil(8 / tile) * tile)
    expect([pageQuantum("cpu", 64), pageQuantum("gpu", 64), pageQuantum("gpu", 96), pageQuantum("gpu", 128), pageQuantum("gpu", 256)]).toEqual([4, 64, 32, 32, 16])
    expect(() => createKvCache(rt, 2 ** 26, 8, 128, { pageRows: 2 ** 26 })).toThrow(/exceed one storage binding/)
    // a capacity past one buffer is fine: pages are allocated as rows arrive
    const huge = createKvCache(rt, 2 ** 26, 8, 128)
    expect(huge.pages.length).toBe(0)
    rt.release(q, q2, q4, k)
    releaseKvCache(rt, cache)
  })

  test("training attention", async () => {
    const rt = await gpu()
    const T = 50, heads = 4, kvHeads = 2, headDim = 16
    const q = rt.tensor([T, heads * headDim]), k = rt.tensor([T, kvHeads * headDim])
    expect(() => attentionTrain(rt, q, k, k, { heads: 3, kvHeads, headDim })).toThrow(/multiple of kvHeads/)
    expect(() => attentionTrain(rt, q, k, k, { heads, kvHeads, headDim: 18 })).toThrow(/multiple of 4/)
    rt.release(q, k)
  })

  test("rope: a layer the table lacks, positions of the wrong shape", async () => {
    const rt = await gpu()
    const gt = uploadRopeTable(rt, startTokensTable(), 2)
    const tx = rt.upload(startTokensInput(), [5, 16]), tp = rt.upload(START_TOKEN_POSITIONS)
    expect(() => applyRope(rt, tx, tp, gt, { heads: 1, headDim: 16, layer: 2 })).toThrow(/layer 2/)
    expect(() => applyRope(rt, tx, tx, gt, { heads: 1, headDim: 16, layer: 0 })).toThrow(/positions/)
    releaseRopeTable(rt, gt)
    rt.release(tx, tp)
  })

  test("adamw, add, embed, logprobs", async () => {
    const rt = await gpu()
    const a = rt.tensor([8]), b = rt.tensor([4])
    expect(() => adamwStep(rt, a, b, a, a, adamwUniforms(ADAMW_DEFAULTS, 1e-3, 1, 1))).toThrow(/adamw: grad has shape/)
    expect(() => adamwUniforms(ADAMW_DEFAULTS, 1e-3, 0, 1)).toThrow(/positive integer/)
    const sq = rt.upload(new Float32Array(4), [2, 2]), flat = rt.upload(new Float32Array(4), [4])
    expect(() => add(rt, sq, flat)).toThrow(/add: b has shape/)
    const table = rt.upload(new Float32Array(8), [2, 4]), floatIds = rt.upload(new Float32Array(2))
    expect(() => embed(rt, table, floatIds)).toThrow(/u32/)
    const logits = rt.upload(new Float32Array(8), [2, 4]), targets = rt.upload(Uint32Array.from([0, 1, 2]))
    expect(() => logprobsFromLogits(rt, logits, targets)).toThrow(/targets has shape/)
    rt.release(a, b, sq, flat, table, floatIds, logits, targets)
  })
})

describe("matmul: template, weight storage, texture limits, release order", () => {
  test("llvmpipe variant names: read back as written, bad ones named; a named variant must read W from the weight's storage", async () => {
    for (const name of ["tt-64x16-8x1", "bb-16x16-8x2", "tb-8x8-16x4"]) expect(cpuVariantName(parseCpuVariant(name))).toBe(name)
    expect(() => parseCpuVariant("tt-64x16")).toThrow("not of the form")
    expect(() => parseCpuVariant("tt-6x16-8x1")).toThrow("TM must be a multiple of 4")
    const rt = await gpu()
    const w = prepareWeight(rt, new Float32Array(16 * 4), 16, 4, { variant: "cpu", storage: "texture" })
    const x = rt.upload(new Float32Array(2 * 4), [2, 4])
    expect(() => linear(rt, x, w, { variant: "cpu", cpuVariant: "bb-16x16-8x2" })).toThrow("the weight is in a texture")
    rt.release(x)
    releaseWeight(rt, w)
  })

  test("prepareWeight picks the storage by variant and by the adapter's profile; setMatmulVariant overrides", async () => {
    const rt = await gpu()
    const w = new Float32Array(8 * 4)
    const cpu = prepareWeight(rt, w, 8, 4, { variant: "cpu" })
    const gp = prepareWeight(rt, w, 8, 4, { variant: "gpu" })
    expect(cpu.storage).toBe("texture")
    expect(gp.storage).toBe("buffer")
    for (const [profile, storage] of [["cpu", "texture"], ["gpu", "buffer"]] as const) {
      const view = withProfile(rt, profile)
      const byProfile = prepareWeight(view, w, 8, 4)
      expect(byProfile.storage).toBe(storage)
      releaseWeight(view, byProfile)
    }
    setMatmulVariant("gpu")
    const forced = prepareWeight(rt, w, 8, 4)
    expect(forced.storage).toBe("buffer")
    for (const x of [cpu, gp, forced]) releaseWeight(rt, x)
  })

  test("past the texture limit: K falls back to a buffer, N splits into parts", async () => {
    const rt = await gpu()
    const maxTex = rt.limits.maxTextureDimension2D
    const tall = prepareWeight(rt, new Float32Array(16 * (maxTex + 4)), 16, maxTex + 4, { variant: "cpu" })
    expect(tall.storage).toBe("buffer")
    releaseWeight(rt, tall)
    expect(() => prepareWeight(rt, new Float32Array(16 * (maxTex + 4)), 16, maxTex + 4, { variant: "cpu", storage: "texture" })).toThrow(/texture limit/)
    const wide = prepareWeight(rt, new Float32Array((4 * maxTex + 20) * 3), 4 * maxTex + 20, 3, { variant: "cpu" })
    expect(wide.storage).toBe("texture")
    expect(wide.parts.length).toBe(2)
    releaseWeight(rt, wide)
  })

  test("regression: releaseWeight while work that reads it is still unsubmitted", async () => {
    const rt = await gpu()
    const w = prepareWeight(rt, Float32Array.from({ length: 32 * 8 }, (_, i) => i % 3), 32, 8, { variant: "cpu" })
    const x = rt.upload(new Float32Array(2 * 8).fill(1), [2, 8])
    const y = linear(rt, x, w)
    releaseWeight(rt, w)
    const got = await rt.read(y)
    expect(got[0]).toBe(7) // row 0 of W: 0,1,2,0,1,2,0,1
    rt.release(x, y)
  })
})

describe("defaults follow the adapter's profile", () => {
  // A real run passes no variant: what it gets must be what the table tests as that profile's variant.
  for (const profile of ["cpu", "gpu"] as const) {
    test(`${profile} profile: linear, matmul and attention without a variant give the explicit variant's bits`, async () => {
      const view = withProfile(await gpu(), profile)
      const x = view.upload(rand(37 * 19, 1), [37, 19])
      const data = rand(21 * 19, 2)
      const wDefault = prepareWeight(view, data, 21, 19)
      const wExplicit = prepareWeight(view, data, 21, 19, { variant: profile, storage: profile === "cpu" ? "texture" : "buffer" })
      const [ya, yb] = [linear(view, x, wDefault), linear(view, x, wExplicit, { variant: profile })]
      expectSameOutputs("linear", { y: await view.read(ya) }, { y: await view.read(yb) })
      const b = view.upload(rand(19 * 23, 3), [19, 23])
      const [ca, cb] = [matmul(view, x, b), matmul(view, x, b, { variant: profile })]
      expectSameOutputs("matmul", { c: await view.read(ca) }, { c: await view.read(cb) })
      view.release(x, b, ya, yb, ca, cb)
      releaseWeight(view, wDefault)
      releaseWeight(view, wExplicit)

      const cache = createKvCache(view, 20, 1, 16)
      const kv = view.upload(rand(20 * 16, 4), [20, 16])
      appendKv(view, cache, kv, kv, 0)
      const q = view.upload(rand(20 * 32, 5), [20, 32])
      const [oa, ob] = [attention(view, q, cache, { heads: 2, queryOffset: 0, rows: 2 }), attention(view, q, cache, { heads: 2, queryOffset: 0, rows: 2, variant: profile })]
      expectSameOutputs("attention", { o: await view.read(oa) }, { o: await view.read(ob) })
      view.release(kv, q, oa, ob)
      releaseKvCache(view, cache)
    })
  }
})

describe("attention memory", () => {
  for (const variant of ["cpu", "gpu"] as const) {
    test(`${variant} kernel: no T×T buffer, the call allocates only its output`, async () => {
      const rt = await gpu()
      const t = 512, heads = 2, d = 16
      const cache = createKvCache(rt, t, 1, d)
      const kv = rt.upload(rand(t * d, 8), [t, d])
      appendKv(rt, cache, kv, kv, 0)
      const q = rt.upload(rand(t * heads * d, 7), [t, heads * d])
      await rt.sync()
      rt.resetPeak()
      const before = rt.stats.liveBytes
      const out = attention(rt, q, cache, { heads, queryOffset: 0, variant, rows: 2 })
      await rt.sync()
      // T² f32 scores would be 1 MiB; the output is 64 KiB. The cpu kernel (any adapter, when forced) reads
      // K and V through texture copies of the cache, rows padded to 64 floats by a repack first (128 KiB
      // each; the textures have a spare texel column and row).
      const copies = variant === "cpu" ? 2 * (t * 64 * 4 + (t + 1) * (64 / 4 + 1) * 16) : 0
      expect(rt.stats.peakBytes - before).toBeLessThanOrEqual(t * heads * d * 4 + copies)
      rt.release(q, out, kv)
      releaseKvCache(rt, cache)
    })
  }
})

describe("attention prepared before a model's weights", () => {
  test("prepareAttention compiles what a chunk's attention runs on the cpu profile (a chunk then compiles nothing), nothing on the gpu profile", async () => {
    const rt = await gpu()
    for (const profile of ["cpu", "gpu"] as const) {
      // a runtime of its own: its pipeline count starts at zero
      rt.flush()
      const view = new GpuRuntime(rt.device, { ...rt.adapter, profile }, rt.instance)
      const t = 512, heads = 2, d = 4
      await prepareAttention(view, heads, 1, d, t)
      const prepared = view.stats.pipelines
      if (profile === "gpu") expect(prepared).toBe(0)
      else expect(prepared).toBeGreaterThan(0)
      const cache = createKvCache(view, t, 1, d)
      const kv = view.upload(rand(t * d, 8), [t, d])
      appendKv(view, cache, kv, kv, 0)
      const compiledBefore = view.stats.pipelines
      const q = view.upload(rand(t * heads * d, 7), [t, heads * d])
      const out = attention(view, q, cache, { heads, queryOffset: 0 })
      await view.sync()
      if (profile === "cpu") expect(view.stats.pipelines).toBe(compiledBefore)
      view.release(q, out, kv)
      releaseKvCache(view, cache)
      view.flush()
    }
  })
})

describe("rope precision helpers", () => {
  test("the angle tolerance discriminates: a plain f32 n·θ misses it at 2M", () => {
    const n = 2_000_000
    // θ_1 of base 1e4, d 128 is not a power of two: the f32 product itself rounds.
    const th = defaultInvFreq(1e4, 128)[1]!
    expect(Math.abs(wrapAngle(Math.fround(n * Math.fround(th)) - n * th))).toBeGreaterThan(1e-3)
  })

  test("fixed-point turns round-trip θ/(2π) to ~1e-19", () => {
    for (const th of [1, 0.75, 1e-4, 1.3e-7, 7.9, 100]) {
      const [hi, lo] = turnsFixedPoint(th)
      const f = th / (2 * Math.PI)
      expect(Math.abs(hi / 2 ** 32 + lo / 2 ** 64 - (f - Math.floor(f)))).toBeLessThan(1e-16)
    }
  })

  test("the start-token table's layers differ far beyond the tolerance, so the wrong layer would fail", () => {
    const x = startTokensInput(), table = startTokensTable()
    const [a, b] = [0, 1].map((layer) => ropeRef(x, START_TOKEN_POSITIONS, table, { heads: 1, headDim: 16, layer }))
    let diff = 0
    for (let k = 0; k < a!.length; k++) diff = Math.max(diff, Math.abs(a![k]! - b![k]!))
    expect(diff).toBeGreaterThan(1e-2)
  })
})

