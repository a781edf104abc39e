import { describe, expect, test } from "bun:test"
import { add, addInPlace } from "../../kernels/add.ts"
import { addRef } from "../../kernels/add.ref.ts"
import { gpu } from "../gpu-shared.ts"

const rand = (n: number, seed: number): Float32Array => {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = (s / 2 ** 32) * 20 - 10
  }
  return out
}

const maxErr = (got: ArrayLike<number>, want: ArrayLike<number>): number => {
  let e = 0
  for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!))
  return e
}

describe("add", () => {
  // 4·k sizes take the vec4 path, the others the scalar path; 7×129 is not a multiple of the workgroup.
  for (const shape of [[1, 4], [7, 129], [3, 1000], [1, 1], [5, 33]]) {
    test(`add ${shape.join("×")}`, async () => {
      const rt = await gpu()
      const n = shape[0]! * shape[1]!
      const a = rand(n, 1), b = rand(n, 2)
      const ta = rt.upload(a, shape), tb = rt.upload(b, shape)
      const out = add(rt, ta, tb)
      expect(out.shape).toEqual(shape)
      // f32 addition of f32 inputs: one rounding, ≤ half an ulp of |sum| ≤ 20.
      expect(maxErr(await rt.read(out), addRef(a, b))).toBeLessThan(1e-6)
      addInPlace(rt, ta, tb)
      expect(maxErr(await rt.read(ta), addRef(a, b))).toBeLessThan(1e-6)
      rt.release(ta, tb, out)
    })
  }

  test("grid-stride covers more than 65535 workgroups of work", async () => {
    const rt = await gpu()
    const n = 65535 * 64 + 37 // scalar path, one more pass of the stride loop
    const a = rand(n, 3), b = rand(n, 4)
    const ta = rt.upload(a), tb = rt.upload(b)
    addInPlace(rt, ta, tb)
    expect(maxErr(await rt.read(ta), addRef(a, b))).toBeLessThan(1e-6)
    rt.release(ta, tb)
  })

  test("shape mismatch throws", async () => {
    const rt = await gpu()
    const ta = rt.upload(new Float32Array(4), [2, 2]), tb = rt.upload(new Float32Array(4), [4])
    expect(() => add(rt, ta, tb)).toThrow(/add: b has shape/)
    rt.release(ta, tb)
  })
})
