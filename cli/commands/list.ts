/**
 * `ropeway list [--plugin FILE]... [--json]`: what a workflow can use — stages (with their params, from
 * their schemas), RoPE methods, search strategies, fitness functions, datasets, models and model
 * families — from the built-ins and any plugin files or packages given.
 */
import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { getStrategy, strategyNames } from "../../plugins/search/index.ts"
import { getRopeMethod, ropeMethodNames } from "../../plugins/rope/index.ts"
import type { AnyStage, Kind, Registry } from "../../pipeline/workflow/index.ts"
import { registryFromFlags } from "../workflow.ts"

export { importPluginSpecs, registryWith } from "../workflow.ts"

export interface ParamInfo {
  readonly name: string
  /** A short type: "integer", "string", "array of \"a\" | \"b\"", ... */
  readonly type: string
  readonly required: boolean
  readonly description?: string
}

export interface Item {
  readonly name: string
  /** The plugin that contributed it ("builtin" for ropeway's own). */
  readonly plugin: string
  readonly description?: string
  readonly params?: readonly ParamInfo[] | string
  /** Stages: input and output artifacts with their kinds. */
  readonly inputs?: Readonly<Record<string, string>>
  readonly outputs?: Readonly<Record<string, string>>
  readonly aliases?: readonly string[]
}

export interface Listing {
  readonly plugins: ReadonlyArray<{ readonly name: string; readonly version: string; readonly source: string }>
  readonly stages: readonly Item[]
  readonly ropeMethods: readonly Item[]
  readonly searchStrategies: readonly Item[]
  readonly fitness: readonly Item[]
  readonly datasets: readonly Item[]
  readonly models: readonly Item[]
  readonly families: readonly Item[]
}

/** The rope_scaling keys each built-in method reads (plugins/rope; a plugin's method may carry `params`). */
const ROPE_PARAMS: Readonly<Record<string, string>> = {
  default: "(none: plain RoPE)",
  linear: "factor",
  ntk: "factor",
  dynamic: "factor, original_max_position_embeddings",
  yarn: "factor, original_max_position_embeddings, attention_factor, mscale, mscale_all_dim, beta_fast, beta_slow, truncate",
  llama3: "factor, low_freq_factor, high_freq_factor, original_max_position_embeddings",
  longrope: "short_factor, long_factor, original_max_position_embeddings, factor, attention_factor, short_mscale, long_mscale",
  "longrope-research": "factors / sets (max_length, scale, factors, start_tokens, mscale), dynamic",
}

type JsonSchema = { readonly [k: string]: unknown }

const typeOf = (s: JsonSchema | undefined, defs: Readonly<Record<string, JsonSchema>>): string => {
  if (s === undefined) return "any"
  const ref = s["$ref"]
  if (typeof ref === "string") return typeOf(defs[ref.split("/").pop() ?? ""], defs)
  const e = s["enum"]
  if (Array.isArray(e)) return e.map((x) => JSON.stringify(x)).join(" | ")
  if (s["const"] !== undefined) return JSON.stringify(s["const"])
  const alts = (s["anyOf"] ?? s["oneOf"]) as JsonSchema[] | undefined
  if (Array.isArray(alts)) return alts.map((a) => typeOf(a, defs)).join(" | ")
  const t = s["type"]
  if (t === "array") return `list of ${typeOf(s["items"] as JsonSchema | undefined, defs)}`
  if (t === "object") {
    const props = s["properties"] as Record<string, JsonSchema> | undefined
    if (props === undefined || Object.keys(props).length === 0) return "object"
    const req = new Set((s["required"] as string[] | undefined) ?? [])
    return `{ ${Object.entries(props).map(([k, v]) => `${k}${req.has(k) ? "" : "?"}: ${typeOf(v, defs)}`).join(", ")} }`
  }
  return typeof t === "string" ? t : Array.isArray(t) ? t.join(" | ") : "any"
}

/** A stage's params from its Schema (the encoded side: what a workflow file writes). */
export function stageParams(stage: AnyStage): ParamInfo[] | string {
  try {
    const doc = Schema.toJsonSchemaDocument(stage.params) as unknown as { schema: JsonSchema; definitions?: Record<string, JsonSchema> }
    const defs = doc.definitions ?? {}
    let root = doc.schema
    const ref = root["$ref"]
    if (typeof ref === "string") root = defs[ref.split("/").pop() ?? ""] ?? root
    const props = (root["properties"] ?? {}) as Record<string, JsonSchema>
    const req = new Set((root["required"] as string[] | undefined) ?? [])
    return Object.entries(props).map(([name, s]) => ({
      name,
      type: typeOf(s, defs),
      required: req.has(name),
      ...(typeof s["description"] === "string" ? { description: s["description"] } : {}),
    }))
  } catch (e) {
    return `(not describable: ${e instanceof Error ? e.message : String(e)})`
  }
}

/** The listing for a registry (built-ins plus whatever was registered into it). */
export function listing(reg: Registry): Listing {
  const items = <A extends { readonly name: string; readonly description?: string }>(kind: Kind, extra: (a: A) => Partial<Item> = () => ({})): Item[] =>
    [...(reg[kind] as Map<string, { value: A; plugin: string }>).values()]
      .map(({ value, plugin }) => ({
        name: value.name,
        plugin,
        ...(value.description === undefined ? {} : { description: value.description }),
        ...extra(value),
      }))
      .sort((a, b) => a.name.localeCompare(b.name))
  const paramsOf = (v: unknown): Partial<Item> => {
    const p = (v as { params?: unknown }).params
    return typeof p === "string" ? { params: p } : {}
  }

  // RoPE methods and search strategies live in their own registries (plugins/rope, plugins/search);
  // a plugin's go to the same place (methods) or are looked up before them (strategies).
  const ropeByMethod = new Map<object, string[]>()
  for (const name of ropeMethodNames()) {
    const m = getRopeMethod(name)!
    ropeByMethod.set(m, [...(ropeByMethod.get(m) ?? []), name])
  }
  const ropeMethods: Item[] = [...ropeByMethod].map(([m, names]) => {
    const name = (m as { name: string }).name
    const aliases = names.filter((n) => n !== name)
    const own = (m as { params?: unknown }).params
    const params = typeof own === "string" ? own : ROPE_PARAMS[name]
    return { name, plugin: name in ROPE_PARAMS ? "builtin" : "plugin", ...(aliases.length > 0 ? { aliases } : {}), ...(params === undefined ? {} : { params }) }
  }).sort((a, b) => a.name.localeCompare(b.name))

  const pluginStrategies = items<{ name: string; description?: string }>("searchStrategies", paramsOf)
  const strategies = [
    ...pluginStrategies,
    ...strategyNames()
      .filter((n) => !pluginStrategies.some((s) => s.name === n))
      .map((n) => ({ name: n, plugin: "builtin", ...(getStrategy(n).name !== n ? { aliases: [getStrategy(n).name] } : {}) })),
  ].sort((a, b) => a.name.localeCompare(b.name))

  return {
    plugins: reg.plugins,
    stages: items<AnyStage>("stages", (s) => ({ params: stageParams(s), inputs: { ...s.inputs }, outputs: { ...s.outputs } })),
    ropeMethods,
    searchStrategies: strategies,
    fitness: items("fitness", paramsOf),
    datasets: items("datasets", paramsOf),
    models: items<{ name: string; description?: string; version?: string; materialize?: unknown }>("models", (m) => ({
      ...(typeof m.materialize === "function" ? { params: "built-in model: `model: <name>` in a workflow" } : { params: "model family: `model: <path to an HF folder>`" }),
    })),
    families: items<{ name: string; description?: string; architectures?: readonly string[] }>("families", (f) => ({
      params: `reads ${(f.architectures ?? []).join(", ")} folders: \`model: <path to an HF folder>\`, \`--model DIR\``,
    })),
  }
}

const section = (title: string, xs: readonly Item[]): string[] => {
  const out = [`${title}:`]
  if (xs.length === 0) out.push("  (none)")
  for (const x of xs) {
    const from = x.plugin === "builtin" || x.plugin === "ropeway" ? "" : `  [${x.plugin}]`
    const aka = x.aliases !== undefined ? ` (also: ${x.aliases.join(", ")})` : ""
    out.push(`  ${x.name}${aka}${from}${x.description !== undefined ? ` — ${x.description}` : ""}`)
    if (x.inputs !== undefined && Object.keys(x.inputs).length > 0) out.push(`      inputs:  ${Object.entries(x.inputs).map(([k, v]) => `${k} (${v})`).join(", ")}`)
    if (x.outputs !== undefined && Object.keys(x.outputs).length > 0) out.push(`      outputs: ${Object.entries(x.outputs).map(([k, v]) => `${k} (${v})`).join(", ")}`)
    if (typeof x.params === "string") out.push(`      params: ${x.params}`)
    else if (x.params !== undefined) {
      if (x.params.length === 0) out.push("      params: (none)")
      for (const p of x.params) out.push(`      ${p.name}${p.required ? "" : "?"}: ${p.type}${p.description !== undefined ? `  — ${p.description}` : ""}`)
    }
  }
  return out
}

export function formatListing(l: Listing): string {
  return [
    `plugins: ${l.plugins.map((p) => `${p.name}@${p.version} (${p.source})`).join(", ")}`,
    "",
    ...section("stages", l.stages),
    "",
    ...section("RoPE methods (rope_scaling.rope_type)", l.ropeMethods),
    "",
    ...section("search strategies", l.searchStrategies),
    "",
    ...section("fitness functions", l.fitness),
    "",
    ...section("datasets", l.datasets),
    "",
    ...section("models", l.models),
    "",
    ...section("model families", l.families),
  ].join("\n")
}

export const list = Command.make(
  "list",
  {
    plugin: Flag.String("plugin").pipe(Flag.withDescription("a plugin file or npm package to load as well (repeatable)"), Flag.atLeast(0)),
    json: Flag.Boolean("json").pipe(Flag.withDescription("print the listing as JSON"), Flag.withDefault(false)),
  },
  ({ plugin, json }) =>
    registryFromFlags(plugin).pipe(
      Effect.map(listing),
      Effect.flatMap((l) => Console.log(json ? JSON.stringify(l, null, 2) : formatListing(l))),
    ),
).pipe(Command.withDescription("List the stages (with their params), RoPE methods, search strategies, fitness functions, datasets and models"))
