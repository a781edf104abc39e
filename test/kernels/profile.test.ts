import { describe, expect, test } from "bun:test"
import { addInPlace } from "../../kernels/add.ts"
import { Profiler } from "../../kernels/profile.ts"
import { fill, scaleInPlace } from "../../kernels/scale.ts"
import { gpu } from "../gpu-shared.ts"

describe("profiler", () => {
  test("records each dispatch and copy with its kernel, grid and bytes, and times distinct ones", async () => {
    const rt = await gpu()
    const a = rt.tensor([1024]), b = rt.tensor([1024])
    fill(rt, a, 1)
    fill(rt, b, 2)
    await rt.sync()
    const profiler = Profiler.for(rt, { replay: true })
    rt.profiler = profiler
    try {
      addInPlace(rt, a, b)
      addInPlace(rt, a, b)
      scaleInPlace(rt, a, 0.5)
      rt.copy(a.buffer, 0, b.buffer, 0, 4096)
    } finally {
      rt.profiler = undefined
    }
    expect(profiler.records.map((r) => r.kernel)).toEqual(["add.addInPlace4", "add.addInPlace4", "scale.scale4", "copy buffer→buffer"])
    expect(profiler.records[0]!.bytes).toBe(2 * 4096)
    expect(profiler.records[0]!.groups).toEqual([4, 1, 1]) // 256 vec4s, 64 per workgroup
    // The work itself ran: a = (1 + 2 + 2)·0.5, then copied into b.
    expect((await rt.read(b))[7]).toBe(2.5)
    const rows = await profiler.rows(rt, { targetMs: 2 })
    expect(rows.map((r) => [r.kernel, r.calls])).toEqual([["add.addInPlace4", 2], ["scale.scale4", 1], ["copy buffer→buffer", 1]])
    for (const r of rows) {
      expect(r.ms).toBeGreaterThan(0)
      expect(r.source).toBe("replay")
    }
    rt.release(a, b)
  })

  test("timestamp mode where the device has timestamp queries", async () => {
    const rt = await gpu()
    if (!rt.device.features.has("timestamp-query")) {
      expect(Profiler.for(rt).timestamps).toBe(false)
      return
    }
    const a = rt.tensor([4096]), b = rt.tensor([4096])
    const profiler = Profiler.for(rt)
    rt.profiler = profiler
    try {
      fill(rt, a, 1)
      fill(rt, b, 2)
      addInPlace(rt, a, b)
    } finally {
      rt.profiler = undefined
    }
    const rows = await profiler.rows(rt)
    expect(rows.every((r) => r.source === "timestamps" && r.ms >= 0)).toBe(true)
    expect((await rt.read(a))[0]).toBe(3)
    rt.release(a, b)
  })
})
