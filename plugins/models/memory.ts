/**
 * Checking a family's memory plan (family.ts `memory`) against the device before anything large is
 * allocated: per-buffer limits (maxStorageBufferBindingSize, maxBufferSize) and the memory there is.
 *
 * WebGPU does not say how much memory a device has. On a software adapter (llvmpipe, lavapipe) device
 * buffers are host memory, so the budget is the host's available memory (MemAvailable); on a GPU it is
 * unknown unless ROPEWAY_MEMORY states it (bytes, or with a K/M/G/T suffix), and only the per-buffer
 * limits and the host's memory for load-time staging are checked. ROPEWAY_MEMORY also caps the budget on
 * a software adapter (to leave memory to other work, or in tests).
 */
import { readFileSync } from "node:fs"
import { freemem } from "node:os"
import { DoesNotFit, inputError } from "../../common/errors.ts"
import type { GpuRuntime } from "../../kernels/runtime.ts"
import type { MemoryOptions, MemoryPlan, ModelFamily, PlanKernels, PlanPart, PlannedModel } from "./family.ts"

/** The device limits a memory plan is checked against (GPUSupportedLimits has both). */
export interface DeviceLimits {
  readonly maxStorageBufferBindingSize: number
  readonly maxBufferSize: number
}

/** Limits and the memory a plan may use. */
export interface DeviceBudget extends DeviceLimits {
  /** Bytes the device's buffers may take in all, and where that figure comes from; undefined: unknown. */
  readonly memory: PlanPart | undefined
  /** Host bytes available for staging while loading. */
  readonly host: PlanPart
  /** Device buffers live in host memory (a software adapter): device total and host staging share one budget. */
  readonly shared: boolean
  /** The kernels the device runs, whose layouts plans count (absent: the family's default). */
  readonly kernels?: PlanKernels
}

/** Host memory available now: MemAvailable on Linux, else what the OS reports free. */
export function hostAvailable(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"))
    if (m !== null) return Number(m[1]) * 1024
  } catch {
    // not Linux
  }
  return freemem()
}

/** Parses ROPEWAY_MEMORY: bytes, or a number with K, M, G or T (powers of 1024). */
export function parseMemory(text: string, source = "ROPEWAY_MEMORY"): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$/i.exec(text)
  if (m === null) throw inputError(source, `expected a byte count like 8G, 512M or 2000000000, got "${text}"`)
  const scale = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase() as "" | "K" | "M" | "G" | "T"]
  return Math.floor(Number(m[1]) * scale)
}

/** A software rasterizer: its buffers are host memory. */
const isSoftware = (rt: GpuRuntime): boolean => {
  // the adapter description carries `software` where the device layer reports it; the cpu kernel profile otherwise
  const a = rt.adapter as typeof rt.adapter & { readonly software?: boolean }
  return a.software ?? a.profile === "cpu"
}

/** What `rt` allows: its limits, and the memory from the host (software adapters) or ROPEWAY_MEMORY. */
export function deviceBudget(rt: GpuRuntime, env: NodeJS.ProcessEnv = process.env): DeviceBudget {
  const { maxTextureDimension2D, maxStorageBufferBindingSize, maxBufferSize } = rt.limits
  return { ...budgetOf(rt.limits, isSoftware(rt), env), kernels: { profile: rt.adapter.profile, maxTextureDimension2D, maxStorageBufferBindingSize, maxBufferSize } }
}

/** `options` with the budget's kernels where they name none. */
export const withKernels = (options: MemoryOptions, budget: DeviceBudget | DeviceLimits): MemoryOptions =>
  options.kernels === undefined && "kernels" in budget && budget.kernels !== undefined ? { ...options, kernels: budget.kernels } : options

export function budgetOf(limits: DeviceLimits, software: boolean, env: NodeJS.ProcessEnv = process.env): DeviceBudget {
  const stated = env.ROPEWAY_MEMORY === undefined || env.ROPEWAY_MEMORY === "" ? undefined : parseMemory(env.ROPEWAY_MEMORY)
  const avail = hostAvailable()
  const host: PlanPart = { bytes: avail, what: "available host memory (MemAvailable)" }
  let memory: PlanPart | undefined
  if (software) {
    memory = stated !== undefined && stated < avail
      ? { bytes: stated, what: "ROPEWAY_MEMORY" }
      : { bytes: avail, what: "available host memory (MemAvailable; a software adapter's buffers are host memory)" }
  } else if (stated !== undefined) memory = { bytes: stated, what: "device memory (ROPEWAY_MEMORY)" }
  return { maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize, maxBufferSize: limits.maxBufferSize, memory, host, shared: software }
}

/** "1.23 GiB", "456.0 MiB", "12.0 KiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let v = bytes
  let u = 0
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`
}

/** The first reason the plan does not fit `budget`, or undefined when it fits. */
export function whyNotFits(plan: MemoryPlan, budget: DeviceBudget | DeviceLimits): { need: PlanPart; have: PlanPart } | undefined {
  if (plan.largestBinding.bytes > budget.maxStorageBufferBindingSize) {
    return { need: plan.largestBinding, have: { bytes: budget.maxStorageBufferBindingSize, what: "the device's maxStorageBufferBindingSize" } }
  }
  if (plan.largestBuffer.bytes > budget.maxBufferSize) {
    return { need: plan.largestBuffer, have: { bytes: budget.maxBufferSize, what: "the device's maxBufferSize" } }
  }
  if (!("host" in budget)) return undefined
  const parts = describeParts(plan)
  if (budget.shared && budget.memory !== undefined) {
    const need = plan.total + plan.hostStaging
    if (need > budget.memory.bytes) return { need: { bytes: need, what: `${parts}, host staging ${formatBytes(plan.hostStaging)}` }, have: budget.memory }
    return undefined
  }
  if (budget.memory !== undefined && plan.total > budget.memory.bytes) return { need: { bytes: plan.total, what: parts }, have: budget.memory }
  if (plan.hostStaging > budget.host.bytes) return { need: { bytes: plan.hostStaging, what: "host staging while loading" }, have: budget.host }
  return undefined
}

/** "weights 1.2 GiB, KV cache 64 MiB, activations 30 MiB[, gradients …]". */
export function describeParts(plan: MemoryPlan): string {
  const parts: [string, number | undefined][] = [
    ["weights", plan.weights], ["LoRA", plan.lora], ["gradients", plan.gradients], ["optimizer state", plan.optimizer],
    ["KV cache", plan.kvCache], ["activations", plan.activations],
  ]
  return parts.filter(([, b]) => b !== undefined && b > 0).map(([n, b]) => `${n} ${formatBytes(b!)}`).join(", ")
}

/** Longest inputs searched for (16M tokens): beyond this ropeway says "at least". */
export const LONGEST_SEARCHED = 2 ** 24

/** The longest length (≤ LONGEST_SEARCHED) whose plan fits `budget`; 0 when not even one token does. The plan grows with length. */
export function longestFit(family: ModelFamily, model: PlannedModel, budget: DeviceBudget | DeviceLimits, options: MemoryOptions = {}): number {
  const planned = withKernels(options, budget)
  const fits = (n: number): boolean => whyNotFits(family.memory(model, n, planned), budget) === undefined
  if (!fits(1)) return 0
  if (fits(LONGEST_SEARCHED)) return LONGEST_SEARCHED
  let lo = 1
  let hi = LONGEST_SEARCHED
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2)
    if (fits(mid)) lo = mid
    else hi = mid
  }
  return lo
}

/**
 * Refuses, before loading, a model whose plan at `length` tokens does not fit: one line naming what it needs
 * and what there is, and the longest length that would fit.
 */
export function checkFits(family: ModelFamily, model: PlannedModel, length: number, budget: DeviceBudget | DeviceLimits, options: MemoryOptions = {}): MemoryPlan {
  const plan = family.memory(model, length, withKernels(options, budget))
  const why = whyNotFits(plan, budget)
  if (why === undefined) return plan
  const longest = longestFit(family, model, budget, options)
  const doing = options.train === undefined ? `at ${length} tokens` : `training (${options.train.mode === "lora" ? "LoRA" : "full"}) at ${length} tokens`
  const hint = longest === 0 ? "not even 1 token fits" : `the longest that fits is ${longest} tokens`
  throw new DoesNotFit({
    message: `${model.config.dir}: does not fit ${doing}: needs ${formatBytes(why.need.bytes)} (${why.need.what}), ${why.have.what} is ${formatBytes(why.have.bytes)}; ${hint}`,
    needed: why.need.bytes,
    limit: why.have.bytes,
  })
}
