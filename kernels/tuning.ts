/**
 * Kernel variants chosen per machine by a short timed probe, cached like Mesa's shader cache.
 *
 * Where block sizes or operand paths decide a kernel's speed, the op lists candidate variants that differ
 * only in how work is tiled, never in any output's summation order, so every candidate gives
 * bit-identical results (test/kernels/tuning.test.ts forces each in turn) and the choice changes speed
 * only: metrics are the same on every machine.
 *
 * The first time an (op, shape) is used on a machine, the op runs with its default (the first candidate)
 * and the shape is queued; `settleTuning(rt)` (which the models call after each scoring call or
 * training step) then times every candidate on operands of that shape, keeps the fastest, and records
 * all the times in `$XDG_CACHE_HOME/ropeway/kernel-tuning.json` (default `~/.cache/…`), under a key naming
 * the adapter (backend, device, driver version) and the CPU model and count. Later runs read the choice
 * from there and never probe again.
 *
 * Environment:
 * - `ROPEWAY_TUNING=off`: no probes and no cache: every op runs its default (tests run this way);
 * - `ROPEWAY_TUNING_PINS="op=variant,…"`: pins an op's variant for every shape where it is a candidate
 *   (e.g. `matmul-cpu=tt-32x16-8x1,attention-cpu=r8`); `bun run bench profile` lists ops and candidates;
 * - `ROPEWAY_TUNING_CACHE=<file>`: another cache file;
 * - `ROPEWAY_TUNING_VERBOSE=1`: one line on stderr per probed shape (the times of every candidate).
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { cpus, homedir } from "node:os"
import { dirname, join } from "node:path"
import type { GpuRuntime } from "./runtime.ts"

export interface TuneRequest {
  /** The op, as pins name it (e.g. "matmul-cpu"). */
  readonly op: string
  /** The shape class this choice holds for (e.g. "matmul nt m1024 n384 k128"). */
  readonly shape: string
  /** Variant names; the first is the default. */
  readonly candidates: readonly string[]
  /** ms per call of a candidate on operands of this shape (compiles it first). */
  readonly probe: (rt: GpuRuntime, candidate: string) => Promise<number>
}

export interface TunedEntry {
  readonly op: string
  readonly shape: string
  readonly choice: string
  /** ms per call of each candidate as probed; empty when pinned or not probed. */
  readonly ms: Readonly<Record<string, number>>
  readonly source: "probe" | "pin" | "default" | "forced"
}

interface CacheFile {
  readonly version: number
  readonly machines: Record<string, Record<string, { choice: string; ms: Record<string, number> }>>
}

const PROBE_ROUNDS = 3

/** Bump when candidate lists or kernels change in a way that makes old timings meaningless. */
const CACHE_VERSION = 2

export type TuningMode = "on" | "off"

export interface TunerConfig {
  readonly mode: TuningMode
  /** The cache file. */
  readonly file: string
  /** The key this machine's entries go under (see machineKey). */
  readonly machine: string
  /** Pinned variant by op. */
  readonly pins: ReadonlyMap<string, string>
}

/** The configuration the environment asks for (see the module comment). */
export function tunerConfigFromEnv(rt: GpuRuntime): TunerConfig {
  return {
    mode: process.env.ROPEWAY_TUNING === "off" ? "off" : "on",
    file: process.env.ROPEWAY_TUNING_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "ropeway", "kernel-tuning.json"),
    machine: machineKey(rt),
    pins: parsePins(process.env.ROPEWAY_TUNING_PINS ?? ""),
  }
}

/** Choices for one runtime: forced, pinned, cached or probed (one per runtime; tests make their own). */
export class Tuner {
  private readonly forced = new Map<string, string>()
  private readonly chosen = new Map<string, TunedEntry>()
  private readonly pending = new Map<string, TuneRequest>()
  private cache: CacheFile["machines"][string] | undefined

  constructor(readonly config: TunerConfig) {}

  get mode(): TuningMode {
    return this.config.mode
  }

  choose(req: TuneRequest): string {
    const forced = this.forced.get(req.op)
    if (forced !== undefined && req.candidates.includes(forced)) return forced
    const key = `${req.op}|${req.shape}`
    const known = this.chosen.get(key)
    if (known !== undefined) return known.choice
    const pin = this.config.pins.get(req.op)
    let entry: TunedEntry
    if (pin !== undefined && req.candidates.includes(pin)) entry = { op: req.op, shape: req.shape, choice: pin, ms: {}, source: "pin" }
    else if (this.mode === "off" || req.candidates.length === 1) entry = { op: req.op, shape: req.shape, choice: req.candidates[0]!, ms: {}, source: "default" }
    else {
      const cached = this.load()[key]
      if (cached !== undefined && req.candidates.includes(cached.choice) && req.candidates.every((c) => c in cached.ms)) {
        entry = { op: req.op, shape: req.shape, choice: cached.choice, ms: cached.ms, source: "probe" }
      } else {
        this.pending.set(key, req)
        return req.candidates[0]!
      }
    }
    this.chosen.set(key, entry)
    return entry.choice
  }

  force(op: string, variant: string | undefined): void {
    if (variant === undefined) this.forced.delete(op)
    else this.forced.set(op, variant)
  }

  /**
   * Probes every queued shape: rounds over the candidates (the first also compiles them), the best time
   * of each, so another process's burst of load on a shared machine rarely decides.
   */
  async settle(rt: GpuRuntime): Promise<void> {
    if (this.pending.size === 0) return
    const work = [...this.pending]
    this.pending.clear()
    for (const [key, req] of work) {
      const ms: Record<string, number> = {}
      for (let round = 0; round < PROBE_ROUNDS; round++) {
        for (const c of req.candidates) ms[c] = Math.min(ms[c] ?? Infinity, await req.probe(rt, c))
      }
      const choice = req.candidates.reduce((best, c) => (ms[c]! < ms[best]! ? c : best))
      this.chosen.set(key, { op: req.op, shape: req.shape, choice, ms, source: "probe" })
      this.load()[key] = { choice, ms }
      if (process.env.ROPEWAY_TUNING_VERBOSE === "1") {
        console.error(`ropeway tuning: ${req.op} ${req.shape} → ${choice} (${req.candidates.map((c) => `${c} ${ms[c]!.toFixed(2)} ms`).join(", ")})`)
      }
    }
    this.save()
  }

  entries(): TunedEntry[] {
    return [...this.chosen.values()]
  }

  private load(): CacheFile["machines"][string] {
    if (this.cache !== undefined) return this.cache
    let machines: CacheFile["machines"] = {}
    try {
      const json = JSON.parse(readFileSync(this.config.file, "utf8")) as Partial<CacheFile>
      if (json.version === CACHE_VERSION && typeof json.machines === "object" && json.machines !== null) machines = json.machines
    } catch {
      // no cache yet, or an unreadable one: probe again and rewrite it
    }
    this.cache = machines[this.config.machine] ?? {}
    return this.cache
  }

  /** Merges this machine's entries into the file (re-read first: other processes may have added theirs). */
  private save(): void {
    if (this.cache === undefined) return
    let machines: CacheFile["machines"] = {}
    try {
      const json = JSON.parse(readFileSync(this.config.file, "utf8")) as Partial<CacheFile>
      if (json.version === CACHE_VERSION && json.machines !== undefined) machines = json.machines
    } catch {
      // start a new file
    }
    machines[this.config.machine] = { ...machines[this.config.machine], ...this.cache }
    const tmp = `${this.config.file}.tmp-${process.pid}`
    try {
      mkdirSync(dirname(this.config.file), { recursive: true })
      writeFileSync(tmp, JSON.stringify({ version: CACHE_VERSION, machines } satisfies CacheFile, null, 1))
      renameSync(tmp, this.config.file)
    } catch (e) {
      rmSync(tmp, { force: true })
      console.error(`ropeway tuning: cannot write ${this.config.file} (${e instanceof Error ? e.message : String(e)}); choices hold for this run only`)
    }
  }
}

/** The adapter (backend, device, driver version) and the CPU it runs on: what a timing depends on. */
export function machineKey(rt: GpuRuntime): string {
  const a = rt.adapter
  const cpu = cpus()
  return `${a.backend} | ${[a.vendor, a.architecture, a.device, a.description].filter((s) => s !== "").join(" ")} | ${cpu[0]?.model.trim() ?? "unknown CPU"} ×${cpu.length}`
}

export function parsePins(text: string): Map<string, string> {
  const pins = new Map<string, string>()
  for (const part of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const eq = part.indexOf("=")
    if (eq <= 0) throw new Error(`ROPEWAY_TUNING_PINS: "${part}" is not op=variant (e.g. matmul-cpu=tt-32x16-8x1)`)
    pins.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim())
  }
  return pins
}

const tuners = new WeakMap<GpuRuntime, Tuner>()
const tunerOf = (rt: GpuRuntime): Tuner => {
  let t = tuners.get(rt)
  if (t === undefined) tuners.set(rt, (t = new Tuner(tunerConfigFromEnv(rt))))
  return t
}

/** The variant to use for this (op, shape) now: forced, pinned, cached, or the default while a probe is queued. */
/**
 * A size rounded up to a power of two (at least `min`) for a tuning key: 1000 and 1024 rows share a choice,
 * so data whose lengths vary (documents cut to fit a sequence) probes a handful of shapes, not one per length.
 */
export const sizeBucket = (n: number, min: number): number => Math.max(min, 2 ** Math.ceil(Math.log2(Math.max(1, n))))

export const chooseVariant = (rt: GpuRuntime, req: TuneRequest): string => tunerOf(rt).choose(req)

/** Runs the probes queued since the last call (a no-op when none are); call between batches of work. */
export const settleTuning = (rt: GpuRuntime): Promise<void> => tunerOf(rt).settle(rt)

/** Forces `op`'s variant wherever it is a candidate (undefined: back to tuning); tests run each candidate in turn. */
export const forceVariant = (rt: GpuRuntime, op: string, variant: string | undefined): void => tunerOf(rt).force(op, variant)

/** The choices made so far in this process (for the profile table). */
export const tunedEntries = (rt: GpuRuntime): TunedEntry[] => tunerOf(rt).entries()

export const tuningMode = (rt: GpuRuntime): TuningMode => tunerOf(rt).mode

/**
 * ms per call of `call` (which records work into the batch): one call to compile and warm, then the best
 * of 3 batches sized to ~30 ms each, so launch cost is in and the submit's cost amortised away.
 */
export async function probeTime(rt: GpuRuntime, call: () => void): Promise<number> {
  call()
  await rt.sync()
  const t0 = performance.now()
  call()
  await rt.sync()
  const reps = Math.max(1, Math.min(200, Math.round(30 / Math.max(0.01, performance.now() - t0))))
  let best = Infinity
  for (let i = 0; i < 3; i++) {
    const t = performance.now()
    for (let r = 0; r < reps; r++) call()
    await rt.sync()
    best = Math.min(best, (performance.now() - t) / reps)
  }
  return best
}
