import { afterAll, describe, expect, test } from "bun:test"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type TuneRequest, Tuner, type TunerConfig, machineKey, parsePins, probeTime, sizeBucket } from "../../kernels/tuning.ts"
import { probeK } from "../../kernels/matmul.ts"
import { gpu } from "../gpu-shared.ts"

const dir = mkdtempSync(join(tmpdir(), "ropeway-tuning-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const config = (over: Partial<TunerConfig> = {}): TunerConfig => ({ mode: "on", file: join(dir, "cache.json"), machine: "test machine", pins: new Map(), ...over })

/** A request whose probe reports fixed times (and counts its calls). */
function request(times: Record<string, number>, calls: string[] = [], shape = "s1"): TuneRequest {
  return {
    op: "op",
    shape,
    candidates: Object.keys(times),
    probe: async (_rt, c) => {
      calls.push(c)
      return times[c]!
    },
  }
}

describe("tuner", () => {
  test("runs the default until probed, then the fastest; the choice persists in the cache file", async () => {
    const rt = await gpu()
    const file = join(dir, "persist.json")
    const calls: string[] = []
    const t = new Tuner(config({ file }))
    const req = request({ a: 3, b: 1, c: 2 }, calls)
    expect(t.choose(req)).toBe("a") // nothing known yet: the default, probe queued
    await t.settle(rt)
    expect(calls).toEqual(["a", "b", "c", "a", "b", "c", "a", "b", "c"]) // rounds over the candidates
    expect(t.choose(req)).toBe("b")
    expect(t.entries()).toEqual([{ op: "op", shape: "s1", choice: "b", ms: { a: 3, b: 1, c: 2 }, source: "probe" }])
    const saved = JSON.parse(readFileSync(file, "utf8"))
    expect(saved.machines["test machine"]["op|s1"].choice).toBe("b")

    // A new process (tuner) on the same machine reads it and never probes.
    const again: string[] = []
    const t2 = new Tuner(config({ file }))
    expect(t2.choose(request({ a: 3, b: 1, c: 2 }, again))).toBe("b")
    await t2.settle(rt)
    expect(again).toEqual([])
    // Another machine does not: its own entry, default first.
    const t3 = new Tuner(config({ file, machine: "other machine" }))
    expect(t3.choose(request({ a: 3, b: 1, c: 2 }))).toBe("a")
  })

  test("a candidate list that changed since the cache was written is probed again", async () => {
    const rt = await gpu()
    const file = join(dir, "changed.json")
    const t = new Tuner(config({ file }))
    t.choose(request({ a: 2, b: 1 }))
    await t.settle(rt)
    const calls: string[] = []
    const t2 = new Tuner(config({ file }))
    expect(t2.choose(request({ a: 2, b: 1, c: 0.5 }, calls))).toBe("a")
    await t2.settle(rt)
    expect(t2.choose(request({ a: 2, b: 1, c: 0.5 }))).toBe("c")
  })

  test("off: defaults, no probes, no file; pins and forcing win over everything", async () => {
    const rt = await gpu()
    const file = join(dir, "off.json")
    const calls: string[] = []
    const off = new Tuner(config({ file, mode: "off" }))
    expect(off.choose(request({ a: 3, b: 1 }, calls))).toBe("a")
    await off.settle(rt)
    expect(calls).toEqual([])
    expect(() => readFileSync(file)).toThrow()

    const pinned = new Tuner(config({ file, pins: parsePins(" op = b , other=x") }))
    expect(pinned.choose(request({ a: 3, b: 1, c: 2 }))).toBe("b")
    expect(pinned.entries()[0]!.source).toBe("pin")
    // A pin that is not a candidate for this shape is ignored (probed as usual).
    expect(pinned.choose(request({ a: 3, c: 2 }, [], "s2"))).toBe("a")

    const forced = new Tuner(config({ file, mode: "off" }))
    forced.force("op", "c")
    expect(forced.choose(request({ a: 3, b: 1, c: 2 }))).toBe("c")
    forced.force("op", undefined)
    expect(forced.choose(request({ a: 3, b: 1, c: 2 }))).toBe("a")
  })

  test("a damaged cache file is ignored and rewritten", async () => {
    const rt = await gpu()
    const file = join(dir, "damaged.json")
    writeFileSync(file, "{ not json")
    const t = new Tuner(config({ file }))
    expect(t.choose(request({ a: 2, b: 1 }))).toBe("a")
    await t.settle(rt)
    expect(JSON.parse(readFileSync(file, "utf8")).machines["test machine"]["op|s1"].choice).toBe("b")
  })

  test("sizes share a key by power of two, at least the minimum (documents of every length probe a few shapes)", () => {
    expect([1, 16, 17, 218, 256, 257, 1023, 1024].map((n) => sizeBucket(n, 16))).toEqual([16, 16, 32, 256, 256, 512, 1024, 1024])
    expect(sizeBucket(100, 256)).toBe(256)
    expect(sizeBucket(0, 64)).toBe(64)
  })

  test("a matmul probe's operands fit one storage binding: a head's K (a 49k vocabulary, bucketed to 64k) is cut", () => {
    const rt = { limits: { maxStorageBufferBindingSize: 2 ** 27 } } as Parameters<typeof probeK>[0]
    const k = probeK(rt, sizeBucket(49152, 16), 576)
    expect(k * 576 * 4).toBeLessThanOrEqual(2 ** 27)
    expect(k % 4).toBe(0)
    expect(k).toBeGreaterThan(49152 / 2)
    expect(probeK(rt, 1024, 576)).toBe(1024) // small products as bucketed
  })

  test("bad pins are rejected with the expected form", () => {
    expect(() => parsePins("matmul-cpu")).toThrow("is not op=variant")
    expect(parsePins("")).toEqual(new Map())
  })

  test("the machine key names the adapter and the CPU; probeTime times recorded work", async () => {
    const rt = await gpu()
    const key = machineKey(rt)
    expect(key).toContain(rt.adapter.backend)
    expect(key).toMatch(/×\d+$/)
    let calls = 0
    const ms = await probeTime(rt, () => {
      calls++
    })
    expect(ms).toBeGreaterThanOrEqual(0)
    expect(calls).toBeGreaterThanOrEqual(5) // warm-up, sizing, 3 batches
  })
})
