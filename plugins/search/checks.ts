/**
 * A search step's plugin-owned params, checked when the workflow is loaded (before the model is read):
 * the strategy and fitness exist, `strategyParams` and `fitnessParams` fit their schemas (or the plugin's own
 * check), `shortPenalty` fits its schema. Each problem is a ParamIssue with a path from the params' root.
 */
import { Result, type Schema } from "effect"
import { errorMessage, inputError } from "../../common/errors.ts"
import { decodeProblems, type SchemaProblem } from "../../common/schema.ts"
import { didYouMean } from "../../common/text.ts"
import type { Registry } from "../../pipeline/workflow/plugin.ts"
import type { ParamIssue } from "../../pipeline/workflow/stage.ts"
import { type AnyFitness, builtinFitness, getFitness, isFitnessPlugin, ShortPenaltySchema } from "./fitness.ts"
import { type AnyStrategy, getStrategy } from "./index.ts"

/** A strategy by name: a plugin's (from the workflow's registry) before the built-ins. */
export function findStrategy(reg: Registry | undefined, name: string): AnyStrategy {
  const v = reg?.searchStrategies.get(name)?.value
  if (v !== undefined && typeof (v as unknown as AnyStrategy).propose === "function") return v as unknown as AnyStrategy
  return getStrategy(name)
}

/** A fitness by name: a plugin's before the built-ins. */
export function findFitness(reg: Registry | undefined, name: string): AnyFitness {
  const v = reg?.fitness.get(name)?.value
  if (v !== undefined) {
    if (!isFitnessPlugin(v)) throw inputError("search.fitness", `"${name}" is not a fitness plugin (it needs resolveParams and samples)`)
    return v
  }
  const b = getFitness(name)
  if (b === undefined) throw inputError("search.fitness", `unknown fitness "${name}"; known: ${[...new Set([...(reg?.names("fitness") ?? []), ...builtinFitness.map((f) => f.name)])].sort().join(", ")}`)
  return b
}

const valueAt = (v: unknown, path: ReadonlyArray<string | number>): unknown =>
  path.reduce<unknown>((o, k) => (typeof o === "object" && o !== null ? (o as Record<string | number, unknown>)[k] : undefined), v)

const keysOf = (schema: Schema.Top): string[] => Object.keys((schema as { fields?: object }).fields ?? {})

/** Schema problems as issues under `base`, with the value got; an unknown key names its owner and what is near. */
function issuesOf(problems: readonly SchemaProblem[], raw: unknown, base: readonly string[], owner: string, schema: Schema.Top): ParamIssue[] {
  return problems.map((p) => {
    const path = [...base, ...p.path]
    if (p.at === "key") {
      const key = String(p.path[p.path.length - 1])
      const known = p.path.length === 1 ? keysOf(schema) : []
      const hint = known.length === 0 ? "" : `${didYouMean(key, known)}; known: ${known.join(", ")}`
      return { path, at: "key", message: `unknown key "${key}" for ${owner}${hint}` }
    }
    const got = p.message.startsWith("missing key") ? "" : `, got ${JSON.stringify(valueAt(raw, p.path))}`
    return { path, message: `${p.message}${got}` }
  })
}

/** `search.<a>.<b>: message` (an InputError from a plugin's own check) as a path under `base` and the message. */
const issueOf = (e: unknown, prefix: RegExp, base: readonly string[]): ParamIssue => {
  const msg = errorMessage(e)
  const m = prefix.exec(msg)
  return m === null ? { path: base, message: msg } : { path: [...base, ...m[1]!.split(".")], message: m[2]! }
}

export function strategyIssues(strategy: AnyStrategy, raw: Readonly<Record<string, unknown>>): ParamIssue[] {
  if (strategy.params !== undefined) {
    const r = decodeProblems(strategy.params, raw, true)
    return Result.isFailure(r) ? issuesOf(r.failure, raw, ["strategyParams"], `search strategy "${strategy.name}"`, strategy.params) : []
  }
  return (strategy.validateParams?.(raw) ?? []).map((i) => ({ ...i, path: ["strategyParams", ...i.path] }))
}

export function fitnessIssues(fitness: AnyFitness, raw: Readonly<Record<string, unknown>>): ParamIssue[] {
  const { shortPenalty, ...own } = raw
  const issues: ParamIssue[] = []
  if (fitness.params !== undefined) {
    const r = decodeProblems(fitness.params, own, true)
    if (Result.isFailure(r)) issues.push(...issuesOf(r.failure, own, ["fitnessParams"], `fitness "${fitness.name}"`, fitness.params))
  } else {
    try {
      fitness.resolveParams(own)
    } catch (e) {
      issues.push(issueOf(e, /^search\.fitnessParams\.([^:\s]+): ([\s\S]*)$/, ["fitnessParams"]))
    }
  }
  if (shortPenalty !== undefined) {
    const r = decodeProblems(ShortPenaltySchema, shortPenalty, true)
    if (Result.isFailure(r)) issues.push(...issuesOf(r.failure, shortPenalty, ["fitnessParams", "shortPenalty"], "shortPenalty", ShortPenaltySchema))
  }
  return issues
}

/** The strategy and the fitness a search step names, and their params. */
export function searchPluginIssues(registry: Registry | undefined, p: { strategy?: string; strategyParams?: Readonly<Record<string, unknown>>; fitness?: string; fitnessParams?: Readonly<Record<string, unknown>> }): ParamIssue[] {
  const issues: ParamIssue[] = []
  try {
    issues.push(...strategyIssues(findStrategy(registry, p.strategy ?? "evolutionary"), p.strategyParams ?? {}))
  } catch (e) {
    issues.push({ path: p.strategy === undefined ? [] : ["strategy"], message: errorMessage(e) })
  }
  try {
    issues.push(...fitnessIssues(findFitness(registry, p.fitness ?? "ppl-truncate"), p.fitnessParams ?? {}))
  } catch (e) {
    issues.push(issueOf(e, /^search\.(fitness): ([\s\S]*)$/, []))
  }
  return issues
}
