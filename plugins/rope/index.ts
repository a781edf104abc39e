/**
 * RoPE methods: the registry (a plugin point: a plugin's `ropeMethods`, or `registerRopeMethod`) plus the
 * built-in methods. Importing this module registers the built-ins; `ropeMethodHook` is how a workflow's
 * plugins reach the registry (the built-in plugin hands it to the engine's `onRegister`).
 */
import { defaultMethod } from "./default.ts"
import { dynamicMethod } from "./dynamic.ts"
import { linearMethod } from "./linear.ts"
import { llama3Method } from "./llama3.ts"
import { longropeResearchMethod } from "./longrope-research.ts"
import { longropeMethod } from "./longrope.ts"
import { ntkMethod } from "./ntk.ts"
import { getRopeMethod, registerRopeMethod } from "./registry.ts"
import type { RopeMethod } from "./types.ts"
import { yarnMethod } from "./yarn.ts"

export type { ChosenTable, RopeMethod, RopeSpec } from "./types.ts"
export { getRopeMethod, methodName, registerRopeMethod, resolveRope, ropeMethodNames } from "./registry.ts"
export * from "./factors.ts"
export { longropeAttentionFactor } from "./longrope.ts"
export { tableFactors } from "./table.ts"

/** The built-in methods, as the built-in plugin contributes them. */
export const BUILTIN_ROPE_METHODS: readonly RopeMethod[] = [
  defaultMethod, linearMethod, ntkMethod, dynamicMethod, yarnMethod, llama3Method, longropeMethod, longropeResearchMethod,
]
for (const m of BUILTIN_ROPE_METHODS) registerRopeMethod(m, m === longropeMethod ? ["su"] : [])

const isRopeMethod = (u: unknown): u is RopeMethod =>
  typeof u === "object" && u !== null && typeof (u as RopeMethod).name === "string" && typeof (u as RopeMethod).resolve === "function"

/** A plugin's RoPE method joins the registry (the same object twice is harmless; another under a taken name is not). */
export function ropeMethodHook(value: unknown, plugin: string): string | undefined {
  if (!isRopeMethod(value)) return `plugin "${plugin}": a RoPE method needs { name, resolve(spec) }`
  const prior = getRopeMethod(value.name)
  if (prior !== undefined && prior !== value) return `plugin "${plugin}" defines RoPE method "${value.name}", which already exists`
  registerRopeMethod(value)
  return undefined
}
