/**
 * safetensors reading and writing: dtype encodings against known bit patterns, round trips, sharded
 * checkpoints, atomic writes, and header validation errors that name the file and tensor.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { readdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { InputError } from "../../common/errors.ts"
import { Checkpoint, SafetensorsFile, encodeSafetensors, toBf16Bits, toF16Bits, writeCheckpoint, writeSafetensors } from "../../common/safetensors.ts"
import { removeDir, rng, snap, tempDir } from "./random-model.ts"

const root = tempDir("ropeway-st-")
afterAll(() => removeDir(root))

describe("dtype encodings", () => {
  test("f16 bit patterns (IEEE binary16, round to nearest even)", () => {
    expect(toF16Bits(1)).toBe(0x3c00)
    expect(toF16Bits(-2)).toBe(0xc000)
    expect(toF16Bits(65504)).toBe(0x7bff)
    expect(toF16Bits(1e6)).toBe(0x7c00)
    expect(toF16Bits(2 ** -24)).toBe(0x0001) // smallest subnormal
    expect(toF16Bits(2 ** -14)).toBe(0x0400) // smallest normal
    expect(toF16Bits(1 / 3)).toBe(0x3555)
    expect(toF16Bits(1 + 2 ** -11)).toBe(0x3c00) // tie → even
    expect(toF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02) // tie → even (up)
    expect(toF16Bits(0)).toBe(0)
    expect(toF16Bits(-0)).toBe(0x8000)
  })

  test("bf16 bit patterns", () => {
    expect(toBf16Bits(1)).toBe(0x3f80)
    expect(toBf16Bits(-1.5)).toBe(0xbfc0)
    expect(toBf16Bits(1 / 3)).toBe(0x3eab)
    expect(toBf16Bits(1 + 2 ** -8)).toBe(0x3f80) // tie → even
    expect(toBf16Bits(3.4e38)).toBe(0x7f80) // rounds past the largest finite → inf
  })

  test("round trip of F32/F16/BF16 values on each grid, including f16 subnormals", () => {
    const next = rng(5)
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const values = Array.from({ length: 500 }, (_, i) => snap((next() - 0.5) * 2 ** ((i % 30) - 20), dtype))
      const path = join(root, `rt-${dtype}.safetensors`)
      writeSafetensors(path, [{ name: "w", dtype, shape: [20, 25], data: values }])
      const f = SafetensorsFile.open(path)
      expect(f.tensors.get("w")?.shape).toEqual([20, 25])
      const back = f.read("w")
      for (let i = 0; i < values.length; i++) expect(back[i]).toBe(values[i]!)
    }
  })
})

describe("files", () => {
  test("header is 8-byte aligned and offsets are consistent", () => {
    const bytes = encodeSafetensors([
      { name: "a", dtype: "F32", shape: [3], data: [1, 2, 3] },
      { name: "b", dtype: "F16", shape: [1, 1], data: [1] },
    ])
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true))
    expect((8 + n) % 8).toBe(0)
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)))
    expect(header.a.data_offsets).toEqual([0, 12])
    expect(header.b.data_offsets).toEqual([12, 14])
  })

  test("sharded checkpoints read like one file; the index is written last", () => {
    const dir = join(root, "sharded")
    const tensors = Array.from({ length: 5 }, (_, i) => ({ name: `t${i}`, dtype: "F32" as const, shape: [2], data: [i, -i] }))
    writeCheckpoint(dir, tensors, { shards: 3 })
    const files = readdirSync(dir).sort()
    expect(files).toEqual(["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json"])
    const ck = Checkpoint.open(dir)
    for (let i = 0; i < 5; i++) expect([...ck.read(`t${i}`)]).toEqual([i, -i])
    // Rewriting as one file removes the index, so the folder is never ambiguous.
    writeCheckpoint(dir, tensors)
    expect(readdirSync(dir).filter((f) => !f.startsWith("model-")).sort()).toEqual(["model.safetensors"])
    expect([...Checkpoint.open(dir).read("t3")]).toEqual([3, -3])
  })

  test("atomic write leaves no temp files", () => {
    const dir = join(root, "atomic")
    writeCheckpoint(dir, [{ name: "x", dtype: "BF16", shape: [1], data: [2] }])
    expect(readdirSync(dir)).toEqual(["model.safetensors"])
  })

  const bad = (name: string, header: unknown, dataBytes = 0): string => {
    const json = Buffer.from(JSON.stringify(header))
    const out = new Uint8Array(8 + json.length + dataBytes)
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true)
    out.set(json, 8)
    const p = join(root, name)
    writeFileSync(p, out)
    return p
  }

  const expectInputError = (f: () => unknown, ...mentions: string[]): void => {
    try {
      f()
    } catch (e) {
      expect(e).toBeInstanceOf(InputError)
      for (const m of mentions) expect((e as Error).message).toContain(m)
      expect((e as Error).message).not.toContain("\n")
      return
    }
    throw new Error("expected an InputError")
  }

  test("header errors name the file and tensor", () => {
    const p1 = bad("offsets.safetensors", { w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, 8)
    expectInputError(() => SafetensorsFile.open(p1), p1, '"w"', "outside")
    const p2 = bad("size.safetensors", { w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8)
    expectInputError(() => SafetensorsFile.open(p2), p2, '"w"', "needs 12 bytes")
    const p3 = bad("shape.safetensors", { w: { dtype: "F32", shape: [-1], data_offsets: [0, 0] } })
    expectInputError(() => SafetensorsFile.open(p3), p3, "shape")
    const p4 = join(root, "short.safetensors")
    writeFileSync(p4, "abc")
    expectInputError(() => SafetensorsFile.open(p4), p4, "not a safetensors file")
    const p5 = bad("i32.safetensors", { w: { dtype: "I32", shape: [2], data_offsets: [0, 8] } }, 8)
    expectInputError(() => SafetensorsFile.open(p5).read("w"), p5, '"w"', "I32")
    const p6 = join(root, "json.safetensors")
    const junk = new Uint8Array(8 + 4)
    new DataView(junk.buffer).setBigUint64(0, 4n, true)
    junk.set(Buffer.from("{{{{"), 8)
    writeFileSync(p6, junk)
    expectInputError(() => SafetensorsFile.open(p6), p6, "malformed")
  })
})
