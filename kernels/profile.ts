/**
 * Per-kernel profiling: which dispatches a piece of work records, and how long each takes.
 *
 * While a `Profiler` is attached to the runtime (`rt.profiler = p`), every dispatch is recorded with its
 * kernel (pipeline label and entry point), workgroup grid and the bytes of the bindings it touches. Times
 * come from one of two sources:
 * - **timestamp queries** where the device has the `timestamp-query` feature (Vulkan lavapipe, real
 *   GPUs): each recorded dispatch gets its own compute pass with timestamps, so times are measured in
 *   place, in the real order and with the real data;
 * - **replay** otherwise (OpenGL ES llvmpipe has no timestamps), and for copies (which have no
 *   timestamps anywhere): after the work, each distinct (kernel, grid, bindings) is recorded again `n`
 *   times in one submit and timed on the CPU clock, n sized to ~20 ms, so launch cost is included and
 *   the ~0.1 ms submit cost is amortised away. Replays bind the recorded buffers: in-place kernels run on
 *   whatever data is there by then, which changes values, not timing.
 */
import type { GpuRuntime } from "./runtime.ts"

export interface DispatchRecord {
  /** Pipeline label, e.g. "matmul-cpu-nt-tt-64x16-8x1", with the entry point when it is not `main`; or "copy …". */
  readonly kernel: string
  /** Workgroups; [0, 0, 0] for a copy. */
  readonly groups: readonly [number, number, number]
  /** Bytes of every binding (storage, uniform slot excluded, textures by their size), or copied. */
  readonly bytes: number
  /** Sets up a replay of this work: `run` records it again into the batch. */
  readonly replay: () => { run(): void; dispose(): void }
  /** In-place time in ms (timestamp queries), once resolved. */
  ms?: number
}

export interface KernelRow {
  readonly kernel: string
  readonly groups: readonly [number, number, number]
  /** Times this (kernel, grid, bytes) was dispatched. */
  readonly calls: number
  /** Milliseconds per call. */
  readonly ms: number
  /** CPU milliseconds this process used per call (replay only: on a shared machine, a steadier measure than wall time). */
  readonly cpuMs: number | undefined
  readonly bytes: number
  readonly source: "timestamps" | "replay"
}

const QUERY_CAPACITY = 2048 // timestamp pairs per query set

export class Profiler {
  readonly records: DispatchRecord[] = []
  private querySet: GPUQuerySet | undefined
  private queryUsed = 0
  /** Records whose timestamps sit in the current query set, by pair index. */
  private pendingRecords: DispatchRecord[] = []
  private readonly readbacks: Promise<void>[] = []

  constructor(readonly timestamps: boolean) {}

  /** The profiler for this runtime: timestamps when the device has them (and `replay` is not asked for). */
  static for(rt: GpuRuntime, options: { readonly replay?: boolean } = {}): Profiler {
    return new Profiler(options.replay !== true && rt.device.features.has("timestamp-query"))
  }

  record(r: DispatchRecord): void {
    this.records.push(r)
  }

  /** Timestamp writes for the next dispatch's own pass (timestamp mode only). */
  passTimestamps(rt: GpuRuntime, r: DispatchRecord): GPUComputePassTimestampWrites {
    if (this.querySet === undefined || this.queryUsed === QUERY_CAPACITY) {
      if (this.querySet !== undefined) rt.flush()
      this.querySet = rt.device.createQuerySet({ type: "timestamp", count: 2 * QUERY_CAPACITY })
      this.queryUsed = 0
    }
    const i = this.queryUsed++
    this.pendingRecords.push(r)
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 }
  }

  /** Called by the runtime before it submits: resolves this batch's timestamps into a readback. */
  beforeSubmit(rt: GpuRuntime, encoder: GPUCommandEncoder): (() => void) | undefined {
    const qs = this.querySet
    const n = this.queryUsed
    if (qs === undefined || n === 0) return undefined
    const records = this.pendingRecords
    this.pendingRecords = []
    this.querySet = undefined
    this.queryUsed = 0
    const bytes = 2 * n * 8
    const resolve = rt.device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC })
    const staging = rt.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST })
    encoder.resolveQuerySet(qs, 0, 2 * n, resolve, 0)
    encoder.copyBufferToBuffer(resolve, 0, staging, 0, bytes)
    return () => {
      this.readbacks.push(
        staging.mapAsync(GPUMapMode.READ).then(() => {
          const t = new BigUint64Array(staging.getMappedRange().slice(0))
          staging.unmap()
          for (let i = 0; i < records.length; i++) records[i]!.ms = Number(t[2 * i + 1]! - t[2 * i]!) / 1e6
          staging.destroy()
          resolve.destroy()
          qs.destroy()
        }),
      )
    }
  }

  /**
   * One row per distinct (kernel, grid, bytes), in order of first appearance. Timestamp mode sums the
   * in-place times; replay mode times each distinct dispatch again (see the module comment).
   */
  async rows(rt: GpuRuntime, options: { readonly targetMs?: number } = {}): Promise<KernelRow[]> {
    // Timestamps still unresolved (the profiler may be detached already): resolve them in a submit of their own.
    rt.flush()
    const encoder = rt.device.createCommandEncoder()
    const after = this.beforeSubmit(rt, encoder)
    rt.device.queue.submit([encoder.finish()])
    after?.()
    await rt.sync()
    await Promise.all(this.readbacks.splice(0))
    const groups = new Map<string, DispatchRecord[]>()
    for (const r of this.records) {
      const key = `${r.kernel}|${r.groups.join("x")}|${r.bytes}`
      let list = groups.get(key)
      if (list === undefined) groups.set(key, (list = []))
      list.push(r)
    }
    const out: KernelRow[] = []
    for (const list of groups.values()) {
      const first = list[0]!
      const timed = list.every((r) => r.ms !== undefined)
      const { ms, cpuMs } = timed ? { ms: list.reduce((a, r) => a + r.ms!, 0) / list.length, cpuMs: undefined } : await replay(rt, first, options.targetMs ?? 20)
      out.push({ kernel: first.kernel, groups: first.groups, calls: list.length, ms, cpuMs, bytes: first.bytes, source: timed ? "timestamps" : "replay" })
    }
    return out
  }
}

/** Best of 3 batches of n replays of one piece of work, n sized so a batch takes ~targetMs (wall and CPU ms per call). */
async function replay(rt: GpuRuntime, r: DispatchRecord, targetMs: number): Promise<{ ms: number; cpuMs: number }> {
  const again = r.replay()
  const run = async (n: number): Promise<{ ms: number; cpuMs: number }> => {
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    for (let i = 0; i < n; i++) again.run()
    await rt.sync()
    const cpu = process.cpuUsage(c0)
    return { ms: (performance.now() - t0) / n, cpuMs: (cpu.user + cpu.system) / 1000 / n }
  }
  try {
    const once = await run(1)
    const n = Math.max(1, Math.min(500, Math.round(targetMs / Math.max(once.ms, 0.01))))
    let best = { ms: Infinity, cpuMs: Infinity }
    for (let i = 0; i < 3; i++) {
      const t = await run(n)
      best = { ms: Math.min(best.ms, t.ms), cpuMs: Math.min(best.cpuMs, t.cpuMs) }
    }
    return best
  } finally {
    again.dispose()
  }
}
