/**
 * The RoPE method registry. Built-in methods register here through the same API a user's plugin uses:
 * `registerRopeMethod({ name, resolve })`, and `score`, `rope` and `generate` find it by the config's
 * `rope_type` (or older `type`) without changes elsewhere.
 */
import { inputError } from "../../common/errors.ts"
import type { ChosenTable, RopeMethod, RopeSpec } from "./types.ts"

const registry = new Map<string, RopeMethod>()

/** Adds (or replaces) a method under its name and any aliases. */
export function registerRopeMethod(method: RopeMethod, aliases: readonly string[] = []): void {
  for (const name of [method.name, ...aliases]) registry.set(name, method)
}

export const ropeMethodNames = (): string[] => [...registry.keys()].sort()

export const getRopeMethod = (name: string): RopeMethod | undefined => registry.get(name)

/** The method named by a rope_scaling object's `rope_type` (or older `type`); "default" when absent. */
export function methodName(scaling: RopeSpec["scaling"]): string {
  if (scaling === undefined) return "default"
  const t = scaling["rope_type"] ?? scaling["type"]
  return typeof t === "string" ? t : "default"
}

/** Resolves a spec to a function from input length to RoPE table; `where` names the source for errors. */
export function resolveRope(spec: RopeSpec, where = spec.scalingKey ?? "rope_scaling"): (length: number) => ChosenTable {
  const raw = spec.scaling?.["rope_type"] ?? spec.scaling?.["type"]
  if (raw !== undefined && typeof raw !== "string") {
    throw inputError(`${where}.rope_type`, `expected a string naming a rope type, got ${JSON.stringify(raw)}`)
  }
  const name = methodName(spec.scaling)
  const method = registry.get(name)
  if (method === undefined) {
    throw inputError(`${where}.rope_type`, `unknown rope type "${name}"; expected one of: ${ropeMethodNames().join(", ")}`)
  }
  const at = method.resolve(spec)
  return (length: number) => {
    if (!Number.isInteger(length) || length < 1) {
      throw inputError("length", `expected an integer ≥ 1, got ${JSON.stringify(length)}`)
    }
    return at(length)
  }
}
