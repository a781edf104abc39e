import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test"
import {
  type MatmulVariant,
  linear,
  matmul,
  prepareWeight,
  releaseWeight,
  setMatmulVariant,
} from "../../kernels/matmul.ts"
import { matmulRef } from "../../kernels/matmul.ref.ts"
import type { GpuRuntime } from "../../kernels/runtime.ts"
import { gpu } from "../gpu-shared.ts"

/** Deterministic values in [-1, 1). */
function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    out[i] = ((s >>> 0) / 2 ** 32) * 2 - 1
  }
  return out
}

const maxAbs = (v: ArrayLike<number>): number => {
  let m = 0
  for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(v[i]!))
  return m
}

/**
 * Tolerance: 4·eps32·sqrt(K) · sqrt(K)·max|a|·max|b|. Each output sums K products in f32; the partial sums
 * stay near sqrt(K)·max|a|·max|b| (random signs), and K roundings of up to an ulp of that add up like a
 * random walk, sqrt(K) of them. The ×4 covers the tail over thousands of outputs. An indexing error
 * shows up as a whole missing or extra term (≈ max|a|·max|b|), far above this for the sizes tested.
 */
function tolerance(k: number, a: ArrayLike<number>, b: ArrayLike<number>): number {
  return 4 * 2 ** -23 * Math.sqrt(k) * (Math.sqrt(k) * maxAbs(a) * maxAbs(b))
}

function expectClose(got: Float32Array, want: Float64Array, tol: number, what: string): void {
  expect(got.length).toBe(want.length)
  let worst = 0
  let at = -1
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!)
    if (!(d <= worst)) {
      worst = d
      at = i
    }
  }
  if (!(worst <= tol)) throw new Error(`${what}: max error ${worst} at ${at} (got ${got[at]}, want ${want[at]}) exceeds ${tol}`)
}

// A cold Mesa shader cache compiles each kernel variant at its first dispatch (seconds on a busy machine).
setDefaultTimeout(60_000)

const VARIANTS: readonly MatmulVariant[] = ["cpu", "gpu"]

afterEach(() => setMatmulVariant(undefined))

async function checkLinear(
  rt: GpuRuntime,
  m: number,
  n: number,
  k: number,
  opts: { variant: MatmulVariant; storage?: "texture" | "buffer"; bias?: boolean; addTo?: boolean; partCols?: number },
): Promise<void> {
  const x = rand(m * k, m * 7 + k)
  const w = rand(n * k, n * 13 + k)
  const bias = rand(n, n + 5)
  const base = rand(m * n, m + n)
  const weight = prepareWeight(rt, w, n, k, {
    variant: opts.variant,
    ...(opts.storage !== undefined ? { storage: opts.storage } : {}),
    ...(opts.partCols !== undefined ? { partCols: opts.partCols } : {}),
  })
  const xt = rt.upload(x, [m, k])
  const bt = opts.bias === true ? rt.upload(bias) : undefined
  const acc = opts.addTo === true ? rt.upload(base, [m, n]) : undefined
  const y = linear(rt, xt, weight, {
    variant: opts.variant,
    ...(bt !== undefined ? { bias: bt } : {}),
    ...(acc !== undefined ? { addTo: acc } : {}),
  })
  if (acc !== undefined) expect(y).toBe(acc)
  expect(y.shape).toEqual([m, n])
  const got = await rt.read(y)
  const want = matmulRef(x, w, m, n, k, { transB: true })
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      if (opts.bias === true) want[i * n + j]! += bias[j]!
      if (opts.addTo === true) want[i * n + j]! += base[i * n + j]!
    }
  // Adding bias and base (both ≤ 1) rounds once or twice more, at the scale of the result.
  const tol = tolerance(k, x, w) + 4 * 2 ** -23 * (Math.sqrt(k) * maxAbs(x) * maxAbs(w) + 2)
  expectClose(got, want, tol, `linear ${m}×${n}×${k} ${JSON.stringify(opts)}`)
  rt.release(xt, bt, y)
  releaseWeight(rt, weight)
}

describe("matmulRef", () => {
  test("matches a hand-computed product, all transposes", () => {
    const a = [1, 2, 3, 4, 5, 6] // [2×3]
    const b = [7, 8, 9, 10, 11, 12] // [3×2]
    expect([...matmulRef(a, b, 2, 2, 3)]).toEqual([58, 64, 139, 154])
    const aT = [1, 4, 2, 5, 3, 6]
    const bT = [7, 9, 11, 8, 10, 12]
    expect([...matmulRef(aT, bT, 2, 2, 3, { transA: true, transB: true })]).toEqual([58, 64, 139, 154])
  })
})

for (const variant of VARIANTS) {
  describe(`linear (${variant} variant)`, () => {
    const shapes: readonly (readonly [number, number, number])[] = [
      [1, 1, 1],
      [1, 37, 29], // M=1, K not a multiple of 4
      [3, 5, 7],
      [16, 16, 8], // the last M on the cpu variant's few-rows block
      [17, 33, 12], // the first on its big block
      [67, 45, 30],
      [130, 70, 64], // past one workgroup tile in both directions
      [33, 17, 1031], // large K, odd
    ]
    for (const [m, n, k] of shapes) {
      test(`${m}×${n}×${k}`, async () => {
        await checkLinear(await gpu(), m, n, k, { variant })
      })
    }
    test("bias and addTo, odd sizes", async () => {
      const rt = await gpu()
      await checkLinear(rt, 37, 21, 19, { variant, bias: true })
      await checkLinear(rt, 37, 21, 19, { variant, addTo: true })
      await checkLinear(rt, 37, 21, 19, { variant, bias: true, addTo: true })
      // N a multiple of 16: the cpu kernel writes y in place, or a scratch added into addTo (vec4 pass)
      await checkLinear(rt, 37, 32, 20, { variant, bias: true })
      await checkLinear(rt, 70, 48, 20, { variant, bias: true, addTo: true })
      await checkLinear(rt, 5, 32, 20, { variant, bias: true, addTo: true })
    })
    test("weight split into column parts", async () => {
      await checkLinear(await gpu(), 41, 50, 24, { variant, partCols: 16, bias: true })
    })
  })
}

describe("linear, storage-buffer weight on the cpu variant", () => {
  test("odd sizes, large K, parts", async () => {
    const rt = await gpu()
    await checkLinear(rt, 35, 23, 13, { variant: "cpu", storage: "buffer", bias: true })
    await checkLinear(rt, 20, 40, 1500, { variant: "cpu", storage: "buffer" })
    await checkLinear(rt, 19, 30, 8, { variant: "cpu", storage: "buffer", partCols: 16, addTo: true })
    await checkLinear(rt, 19, 64, 8, { variant: "cpu", storage: "buffer", partCols: 32, addTo: true, bias: true })
  })
  test("past the texture limit: K falls back to a buffer, N splits into parts, M into chunks", async () => {
    const rt = await gpu()
    const maxTex = rt.limits.maxTextureDimension2D
    const tall = prepareWeight(rt, new Float32Array(16 * (maxTex + 4)), 16, maxTex + 4, { variant: "cpu" })
    expect(tall.storage).toBe("buffer")
    releaseWeight(rt, tall)
    const wide = prepareWeight(rt, new Float32Array((4 * maxTex + 20) * 3), 4 * maxTex + 20, 3, { variant: "cpu" })
    expect(wide.storage).toBe("texture")
    expect(wide.parts.length).toBe(2)
    releaseWeight(rt, wide)
    await checkLinear(rt, 2, 16, maxTex + 4, { variant: "cpu" })
    await checkLinear(rt, 3, 4 * maxTex + 20, 3, { variant: "cpu", bias: true })
    // x goes through a texture too: more rows than a texture holds are done in chunks of rows
    await checkLinear(rt, maxTex + 50, 16, 64, { variant: "cpu", addTo: true })
    await checkLinear(rt, maxTex + 50, 20, 6, { variant: "cpu", bias: true })
  })
  test("releaseWeight with work that reads it still unsubmitted", async () => {
    const rt = await gpu()
    const w = prepareWeight(rt, Float32Array.from({ length: 32 * 8 }, (_, i) => i % 3), 32, 8, { variant: "cpu" })
    const x = rt.upload(new Float32Array(2 * 8).fill(1), [2, 8])
    const y = linear(rt, x, w)
    releaseWeight(rt, w)
    const got = await rt.read(y)
    expect(got[0]).toBe(7) // row 0 of W: 0,1,2,0,1,2,0,1
    rt.release(x, y)
  })
  test("prepareWeight picks by variant, and the setter overrides", async () => {
    const rt = await gpu()
    const w = new Float32Array(8 * 4)
    const cpu = prepareWeight(rt, w, 8, 4, { variant: "cpu" })
    const gp = prepareWeight(rt, w, 8, 4, { variant: "gpu" })
    expect(cpu.storage).toBe("texture")
    expect(gp.storage).toBe("buffer")
    setMatmulVariant("gpu")
    const forced = prepareWeight(rt, w, 8, 4)
    expect(forced.storage).toBe("buffer")
    for (const x of [cpu, gp, forced]) releaseWeight(rt, x)
  })
  test("leading dims and shape errors", async () => {
    const rt = await gpu()
    const w = prepareWeight(rt, rand(6 * 8, 1), 6, 8)
    const x = rt.upload(rand(2 * 3 * 8, 2), [2, 3, 8])
    const y = linear(rt, x, w)
    expect(y.shape).toEqual([2, 3, 6])
    const got = await rt.read(y)
    expectClose(got, matmulRef(rand(48, 2), rand(48, 1), 6, 6, 8, { transB: true }), tolerance(8, [1], [1]), "leading dims")
    const bad = rt.upload(new Float32Array(7 * 2), [2, 7])
    expect(() => linear(rt, bad, w)).toThrow("expected last dim 8")
    rt.release(x, y, bad)
    releaseWeight(rt, w)
  })
})

for (const variant of VARIANTS) {
  describe(`matmul (${variant} variant)`, () => {
    const cases: readonly (readonly [number, number, number])[] = [
      [1, 9, 6],
      [45, 27, 13],
      [70, 66, 130],
      [9, 11, 1027],
    ]
    for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      test(`transA=${transA} transB=${transB}`, async () => {
        const rt = await gpu()
        for (const [m, n, k] of cases) {
          const a = rand(m * k, m + 3 * k)
          const b = rand(k * n, n + 5 * k)
          const at = rt.upload(a, transA ? [k, m] : [m, k])
          const bt = rt.upload(b, transB ? [n, k] : [k, n])
          const c = matmul(rt, at, bt, { transA, transB, variant })
          expect(c.shape).toEqual([m, n])
          expectClose(await rt.read(c), matmulRef(a, b, m, n, k, { transA, transB }), tolerance(k, a, b), `matmul ${m}×${n}×${k} ${variant}`)
          rt.release(at, bt, c)
        }
      })
    }
    test("rejects mismatched inner dims", async () => {
      const rt = await gpu()
      const a = rt.tensor([3, 4])
      const b = rt.tensor([5, 2])
      expect(() => matmul(rt, a, b, { variant })).toThrow("inner dims differ")
      rt.release(a, b)
    })
  })
}
