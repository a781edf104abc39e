/**
 * Workflow files: read, parse, load plugins, validate every field, resolve artifact references and order
 * the steps. Nothing runs until this has succeeded; every problem becomes a Diagnostic with a position.
 *
 * Format (see workflows/README or the tests' fixtures):
 *   name: demo                 # [A-Za-z0-9._-], names the run folder
 *   seed: 42                   # integer >= 0, given to every step (a step may override it with `seed:`)
 *   model: tiny                # a built-in model name, or a path to a Hugging Face folder (relative to this file)
 *   plugins: [./my-plugin.ts, some-npm-package]
 *   steps:                     # a mapping name -> step (file order), or a list of steps with `name:`
 *     search:
 *       stage: search
 *       params: { length: 8192 }
 *       inputs: { model: model }                 # the workflow's model
 *     finetune:
 *       stage: finetune
 *       inputs:
 *         model: search.checkpoint               # <step>.<output>, or the same as ${steps.search.checkpoint}
 *   cluster: { ... }           # a plugin's setting (a top-level key a plugin owns, e.g. the cluster's)
 * Steps may reference any step in the file; they run in file order, moved after their inputs' makers.
 * Quote `${...}` inside a flow mapping (`inputs: { a: "${steps.x.y}" }`): there `{` is YAML syntax.
 * A step's params are checked against its stage's Schema (unknown keys are errors), then by the stage's
 * own `validate` hook (nested params a plugin owns); the cache key holds the params in encoded form after
 * decoding, so a default left out and written out are the same.
 * The files a stage's `paths` hook names in its params (the built-ins: a corpus, `data.path`) are resolved
 * against this file's folder, like `model:`, and the stage and the cache key see the absolute path; one that
 * does not exist is a plan problem with its position, and `run` stops on it before any step.
 * The engine knows no stage of its own: the built-ins come in `LoadOptions.builtins` (the CLI's).
 */
import { Effect, Result, Schema } from "effect"
import { existsSync, readFileSync, statSync } from "node:fs"
import { fileURLToPath, pathToFileURL } from "node:url"
import { dirname, isAbsolute, join, resolve } from "node:path"
import { resolve as resolveModule } from "import-meta-resolve"
import { type Document, isMap, isSeq, LineCounter, parseDocument } from "yaml"
import { errorMessage } from "../../common/errors.ts"
import { canonicalJson, sha256 } from "../../common/hash.ts"
import { decodeProblems } from "../../common/schema.ts"
import { didYouMean } from "../../common/text.ts"
import { type Diagnostic, type DocPath, SourceMap, WorkflowInvalid } from "./diagnostics.ts"
import { isPlugin, type ModelContribution, type Plugin, type PluginInfo, Registry } from "./plugin.ts"
import { type AnyStage, defineStage, type ParamIssue } from "./stage.ts"

/** Where an input artifact comes from. */
export type InputSource =
  | { readonly kind: "step"; readonly step: string; readonly output: string }
  /** The workflow's model when it is a folder on disk (hashed when the run starts). */
  | { readonly kind: "path"; readonly path: string }

export interface ResolvedStep {
  readonly name: string
  readonly stage: AnyStage
  /** Decoded params, as the stage sees them. */
  readonly params: unknown
  /** The params in canonical encoded form: what the cache key and the manifest hold. */
  readonly paramsJson: unknown
  readonly seed: number
  readonly inputs: Readonly<Record<string, InputSource>>
  /** True for the step that builds a built-in model (`model:` naming one). */
  readonly synthetic: boolean
}

export type ModelRef =
  | { readonly kind: "none" }
  | { readonly kind: "builtin"; readonly name: string; readonly plugin: string }
  | { readonly kind: "path"; readonly spec: string; readonly path: string; readonly exists: boolean }

/** A file or folder a step reads from outside the store (a corpus), where the workflow names it. */
export interface ExternalFile {
  readonly step: string
  readonly path: string
  readonly exists: boolean
  /** Points at the path in the workflow file; its message says what is missing. */
  readonly where: Diagnostic
}

export interface Workflow {
  readonly file: string
  /** sha256 of the file's bytes. */
  readonly hash: string
  readonly name: string
  readonly seed: number
  readonly model: ModelRef
  readonly plugins: readonly PluginInfo[]
  readonly registry: Registry
  /** In run order: every step after the steps it takes artifacts from. */
  readonly steps: readonly ResolvedStep[]
  /** Files the steps read from outside the store (a corpus), resolved against the workflow's folder. */
  readonly files: readonly ExternalFile[]
  /** Top-level keys owned by plugins (`cluster:`), decoded by their schemas. */
  readonly settings: Readonly<Record<string, unknown>>
}

export interface LoadOptions {
  /** The built-in plugins, registered first with source "builtin" (the CLI's; the engine has none of its own). */
  readonly builtins?: readonly Plugin[]
  /** Plugins registered after the built-ins and before the file's own (tests, embedding programs). */
  readonly plugins?: readonly Plugin[]
}

/** The step name a built-in model's build step takes; reserved. */
export const MODEL_STEP = "model"

const CORE_KEYS = ["name", "seed", "model", "plugins", "steps"] as const
const STEP_KEYS = ["name", "stage", "params", "inputs", "seed", "description"] as const

const Top = Schema.Struct({
  name: Schema.String.check(
    Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, { message: "Expected a name of letters, digits, '.', '_' or '-' (it names the run folder)" }),
  ),
  seed: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0, { message: "Expected an integer >= 0" })),
  model: Schema.optionalKey(Schema.NonEmptyString),
  plugins: Schema.optionalKey(Schema.Array(Schema.NonEmptyString)),
  steps: Schema.Unknown,
})
type Top = typeof Top.Type

const StepShape = Schema.Struct({
  name: Schema.optionalKey(Schema.String),
  stage: Schema.NonEmptyString,
  params: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown)),
  inputs: Schema.optionalKey(Schema.Record(Schema.String, Schema.String)),
  seed: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
  description: Schema.optionalKey(Schema.String),
})

/** Decodes `value` (at `base` in the document); on failure returns one diagnostic per issue, with the YAML text it got. */
const decodeAt = <A>(
  src: SourceMap,
  schema: Schema.Codec<A, any, never, never>,
  value: unknown,
  base: DocPath,
  excess: boolean,
): Result.Result<A, Diagnostic[]> =>
  Result.mapError(decodeProblems(schema, value, excess), (problems) =>
    problems.map((p) => {
      const path = [...base, ...p.path]
      const got = p.at === "key" || p.message.startsWith("missing key") ? undefined : src.source(path)
      return src.diag(path, got === undefined ? p.message : `${p.message}, got ${got}`, p.at)
    }),
  )

/** The file a package name resolves to from `dir`, as Node's ESM resolution finds it (the same under Bun and Deno). */
export const resolvePackage = (spec: string, dir: string): string =>
  fileURLToPath(resolveModule(spec, pathToFileURL(join(dir, "/")).href))

const looksLikePath = (spec: string): boolean =>
  spec.startsWith(".") || spec.startsWith("/") || /\.(m?[jt]s|tsx?)$/.test(spec)

/** Imports a plugin module; returns its plugins or a problem to report. */
const importPlugins = async (spec: string, dir: string): Promise<{ plugins: Plugin[]; source: string } | string> => {
  let target: string
  let source: string
  if (looksLikePath(spec)) {
    target = isAbsolute(spec) ? spec : resolve(dir, spec)
    if (!existsSync(target) || statSync(target).isDirectory()) return `plugin file not found: ${target}`
    source = target
  } else {
    try {
      target = resolvePackage(spec, dir)
    } catch {
      return `plugin package "${spec}" not found (install it next to the workflow file, or give a path)`
    }
    source = spec
    try {
      const pkg = JSON.parse(readFileSync(resolvePackage(`${spec}/package.json`, dir), "utf8")) as { version?: unknown }
      if (typeof pkg.version === "string") source = `${spec}@${pkg.version}`
    } catch {
      // packages that hide package.json behind "exports": the plugin's own version still goes in the manifest
    }
  }
  let mod: Record<string, unknown>
  try {
    mod = (await import(target)) as Record<string, unknown>
  } catch (e) {
    const first = (e instanceof Error ? e.message : String(e)).split("\n")[0]
    return `plugin ${spec} failed to load: ${first}`
  }
  const found = [...new Set(Object.values(mod).filter(isPlugin))]
  if (found.length === 0) {
    return `${target} exports no plugin; expected \`export default definePlugin({ name, version, ... })\``
  }
  return { plugins: found, source }
}

/** Parses a reference: `step.output`, `${steps.step.output}`, `model` or `${model}`. */
const parseRef = (text: string): { step: string; output: string } | "model" | undefined => {
  const t = text.trim()
  const inner = /^\$\{\s*(.*?)\s*\}$/.exec(t)?.[1]
  if (inner !== undefined) {
    if (inner === "model") return "model"
    const m = /^steps\.([^.\s]+)\.([^.\s]+)$/.exec(inner)
    return m === null ? undefined : { step: m[1]!, output: m[2]! }
  }
  if (t === "model") return "model"
  const m = /^([^.\s${}]+)\.([^.\s${}]+)$/.exec(t)
  return m === null ? undefined : { step: m[1]!, output: m[2]! }
}

const kindOk = (want: string, have: string): boolean => want === "any" || have === "any" || want === have

const runValidate = (stage: AnyStage, params: unknown, ctx: { registry: Registry; dir: string }): readonly ParamIssue[] => {
  if (stage.validate === undefined) return []
  try {
    return stage.validate(params, ctx)
  } catch (e) {
    // a hook that throws is a bug in it, but the user still needs to see the message, at the params
    return [{ path: [], message: `stage "${stage.name}" could not check its params: ${e instanceof Error ? e.message : String(e)}` }]
  }
}

const builtinModelStage = (model: ModelContribution & { readonly pluginVersion: string }, plugin: string): AnyStage => {
  const materialize = model.materialize!
  return defineStage({
    name: `model:${model.name}`,
    version: `${plugin}@${model.pluginVersion}/${model.version ?? "1"}`,
    params: Schema.Struct({}),
    outputs: { model: "model" },
    run: (ctx) => materialize(ctx.outputs.model, ctx).pipe(Effect.asVoid),
  })
}

/** The parsed file, or the diagnostics that stop loading at once. */
interface Parsed {
  readonly abs: string
  readonly text: string
  readonly doc: Document.Parsed
  readonly src: SourceMap
  readonly raw: Record<string, unknown>
}

function parseFile(abs: string): Parsed | Diagnostic[] {
  let text: string
  try {
    text = readFileSync(abs, "utf8")
  } catch {
    return [{ file: abs, line: 1, column: 1, path: "", message: "workflow file not found or unreadable" }]
  }
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, keepSourceTokens: true, prettyErrors: false })
  if (doc.errors.length > 0) {
    // only the first: the parser's later errors are mostly echoes of it
    return doc.errors.slice(0, 1).map((e) => ({
      file: abs,
      ...(({ line, col }) => ({ line, column: col }))(lines.linePos(e.pos[0])),
      path: "",
      message: `YAML syntax error: ${e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")}`,
    }))
  }
  const src = new SourceMap(abs, doc, lines, text)
  if (!isMap(doc.contents)) return [src.diag([], "expected a mapping with name, seed and steps")]
  let raw: Record<string, unknown>
  try {
    raw = doc.toJS() as Record<string, unknown>
  } catch (e) {
    // the yaml library refuses aliases that expand too far (a "billion laughs" file)
    return [{ file: abs, line: 1, column: 1, path: "", message: `YAML: ${errorMessage(e).split("\n")[0]}` }]
  }
  return { abs, text, doc, src, raw }
}

/** Keys of the file that are neither the engine's nor a registered plugin's setting. */
const unknownTopKeys = (p: Parsed, registry: Registry): Diagnostic[] => {
  const known = [...CORE_KEYS, ...registry.names("settings")]
  return Object.keys(p.raw).filter((k) => !known.includes(k)).map((k) => p.src.diag([k], `unknown key "${k}"; expected one of: ${known.join(", ")}`, "key"))
}

/** The file's `plugins:`, registered after the built-ins and the caller's. */
const registerFilePlugins = (p: Parsed, top: Top, registry: Registry, diags: Diagnostic[]) =>
  Effect.gen(function* () {
    for (const [i, spec] of (top.plugins ?? []).entries()) {
      const got = yield* Effect.promise(() => importPlugins(spec, dirname(p.abs)))
      if (typeof got === "string") diags.push(p.src.diag(["plugins", i], got))
      else for (const plugin of got.plugins) {
        const clash = registry.register(plugin, got.source)
        if (clash !== undefined) diags.push(p.src.diag(["plugins", i], clash))
      }
    }
  })

/** Plugin settings present in the file (`cluster:`), each decoded by its schema. */
function decodeSettings(p: Parsed, registry: Registry, diags: Diagnostic[]): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, entry] of registry.settings) {
    if (!(key in p.raw)) continue
    const r = decodeAt(p.src, entry.value.schema, p.raw[key], [key], true)
    if (Result.isFailure(r)) diags.push(...r.failure)
    else out[key] = r.success
  }
  return out
}

/** `model:`: a built-in model (made by a first step, `model`) or a Hugging Face folder (relative to the file). */
function resolveModel(p: Parsed, top: Top, registry: Registry, diags: Diagnostic[]): { model: ModelRef; step?: ResolvedStep } {
  if (top.model === undefined) return { model: { kind: "none" } }
  const entry = registry.models.get(top.model)
  if (entry !== undefined) {
    if (typeof entry.value.materialize !== "function") {
      diags.push(p.src.diag(["model"], `model "${top.model}" is a model family, not a model: give a path to a Hugging Face folder`))
      return { model: { kind: "none" } }
    }
    const stage = builtinModelStage(entry.value, entry.plugin)
    return {
      model: { kind: "builtin", name: top.model, plugin: entry.plugin },
      step: { name: MODEL_STEP, stage, params: {}, paramsJson: {}, seed: top.seed, inputs: {}, synthetic: true },
    }
  }
  const dir = dirname(p.abs)
  const path = isAbsolute(top.model) ? top.model : join(dir, top.model)
  const exists = existsSync(path)
  if (!exists && !looksLikePath(top.model) && !top.model.includes("/")) {
    const known = [...registry.models.values()].filter((m) => typeof m.value.materialize === "function").map((m) => m.value.name)
    diags.push(p.src.diag(["model"], `unknown model "${top.model}": no built-in model of that name (known: ${known.join(", ") || "none"}) and no folder ${path}`))
  }
  return { model: { kind: "path", spec: top.model, path, exists } }
}

/** `steps:` as (place, name, value) entries, from a mapping or a list of named steps. */
function stepEntries(p: Parsed, diags: Diagnostic[]): Array<{ at: DocPath; name: string; value: unknown }> {
  const node = p.doc.get("steps", true)
  const entries: Array<{ at: DocPath; name: string; value: unknown }> = []
  if (isSeq(node)) {
    ;(p.raw["steps"] as unknown[]).forEach((v, i) => {
      const name = typeof v === "object" && v !== null ? (v as Record<string, unknown>)["name"] : undefined
      if (typeof name !== "string" || name === "") diags.push(p.src.diag(["steps", i], "a step in a list needs `name: <step name>`"))
      else entries.push({ at: ["steps", i], name, value: v })
    })
  } else if (isMap(node)) {
    for (const [name, v] of Object.entries(p.raw["steps"] as Record<string, unknown>)) entries.push({ at: ["steps", name], name, value: v })
  } else {
    diags.push(p.src.diag(["steps"], "expected `steps:` to be a mapping of step name to step, or a list of steps"))
  }
  if (entries.length === 0 && diags.length === 0) diags.push(p.src.diag(["steps"], "expected at least one step"))
  return entries
}

interface Declared {
  readonly at: DocPath
  readonly name: string
  readonly stage: AnyStage
  readonly inputs: Record<string, string>
  readonly params: unknown
  readonly paramsJson: unknown
  readonly seed: number
}

/** Context for checking one step: the file, the registry, where problems and external files go. */
interface StepCheck {
  readonly p: Parsed
  readonly registry: Registry
  readonly diags: Diagnostic[]
  readonly files: ExternalFile[]
  readonly byMap: boolean
}

/** The stage's `paths` hook: named files resolved against the workflow's folder, in a copy of the params. */
function resolvePaths(c: StepCheck, stage: AnyStage, step: string, at: DocPath, params: unknown): unknown {
  let out = params
  for (const f of stage.paths?.(params) ?? []) {
    const value = f.path.reduce<unknown>((o, k) => (o as Record<string | number, unknown> | undefined)?.[k], out)
    if (typeof value !== "string" || value === "") continue
    // Resolved before the cache key is made: the same text in two folders names two files.
    const path = isAbsolute(value) ? value : resolve(dirname(c.p.abs), value)
    out = setIn(out, f.path, path)
    c.files.push({ step, path, exists: existsSync(path), where: c.p.src.diag([...at, "params", ...f.path], `${f.what} not found: ${path}`) })
  }
  return out
}

const setIn = (o: unknown, path: readonly (string | number)[], value: unknown): unknown => {
  if (path.length === 0) return value
  const [k, ...rest] = path
  const obj = (o ?? {}) as Record<string | number, unknown>
  return Array.isArray(obj) ? obj.map((x, i) => (i === k ? setIn(x, rest, value) : x)) : { ...obj, [k!]: setIn(obj[k!], rest, value) }
}

/** One step: its keys, its stage, its params (schema, paths, the stage's own checks). */
function declareStep(c: StepCheck, e: { at: DocPath; name: string; value: unknown }, seed: number): Declared | undefined {
  const { src } = c.p
  if (typeof e.value !== "object" || e.value === null || Array.isArray(e.value)) {
    c.diags.push(src.diag(e.at, "expected a step: a mapping with `stage:`, and optionally `params:`, `inputs:`, `seed:`"))
    return undefined
  }
  const v = e.value as Record<string, unknown>
  const badKeys = Object.keys(v).filter((k) => !(STEP_KEYS as readonly string[]).includes(k) || (k === "name" && c.byMap))
  for (const k of badKeys) c.diags.push(src.diag([...e.at, k], `unknown key "${k}" in a step; expected one of: stage, params, inputs, seed, description`, "key"))
  const shape = decodeAt(src, StepShape, v, e.at, false)
  if (Result.isFailure(shape)) return void c.diags.push(...shape.failure)
  if (badKeys.length > 0) return undefined
  const s = shape.success
  const stage = c.registry.stage(s.stage)
  if (stage === undefined) {
    const names = c.registry.names("stages")
    c.diags.push(src.diag([...e.at, "stage"], `unknown stage "${s.stage}"; available: ${names.join(", ") || "none"}${didYouMean(s.stage, names)}`))
    return undefined
  }
  const params = decodeAt(src, stage.params, s.params ?? {}, [...e.at, "params"], true)
  if (Result.isFailure(params)) return void c.diags.push(...params.failure)
  const decoded = resolvePaths(c, stage, e.name, e.at, params.success)
  const issues = runValidate(stage, decoded, { registry: c.registry, dir: dirname(c.p.abs) })
  if (issues.length > 0) {
    for (const i of issues) c.diags.push(src.diag([...e.at, "params", ...i.path], i.message, i.at ?? "value"))
    return undefined
  }
  let paramsJson: unknown
  try {
    paramsJson = JSON.parse(canonicalJson(Schema.encodeUnknownSync(stage.params)(decoded)))
  } catch {
    paramsJson = JSON.parse(canonicalJson(s.params ?? {}))
  }
  return { at: e.at, name: e.name, stage, inputs: s.inputs ?? {}, params: decoded, paramsJson, seed: s.seed ?? seed }
}

/** Every step's declaration; `seen` holds every well-named step, valid or not. */
function declareSteps(c: StepCheck, entries: ReturnType<typeof stepEntries>, seed: number): { declared: Declared[]; seen: Map<string, DocPath> } {
  const seen = new Map<string, DocPath>()
  const declared: Declared[] = []
  for (const e of entries) {
    if (!/^[A-Za-z0-9_-]+$/.test(e.name) || e.name === MODEL_STEP) {
      c.diags.push(c.p.src.diag(e.at, `step name "${e.name}" must be letters, digits, _ or - (and not "${MODEL_STEP}", the workflow's model)`, "key"))
      continue
    }
    if (seen.has(e.name)) {
      c.diags.push(c.p.src.diag(e.at, `duplicate step name "${e.name}"`, "key"))
      continue
    }
    seen.set(e.name, e.at)
    const d = declareStep(c, e, seed)
    if (d !== undefined) declared.push(d)
  }
  return { declared, seen }
}

/** One input reference of a step, checked against what its maker makes. */
function resolveInput(
  c: StepCheck, d: Declared, input: string, ref: string, want: string, model: ModelRef, byName: ReadonlyMap<string, Declared>, seen: ReadonlyMap<string, DocPath>,
): InputSource | undefined {
  const at = [...d.at, "inputs", input]
  const diag = (msg: string) => void c.diags.push(c.p.src.diag(at, msg))
  const r = parseRef(ref)
  if (r === undefined) return diag(`expected an artifact reference: <step>.<output>, \${steps.<step>.<output>} or model, got ${JSON.stringify(ref)}`)
  if (r === "model") {
    if (model.kind === "none") return diag("refers to the workflow's model, but the workflow has no `model:`")
    if (!kindOk(want, "model")) return diag(`expected a ${want} artifact, the workflow's model is a model`)
    return model.kind === "builtin" ? { kind: "step", step: MODEL_STEP, output: "model" } : { kind: "path", path: model.path }
  }
  const maker = byName.get(r.step)
  // the maker exists but is invalid: its own error says why, a second one here is noise
  if (maker === undefined && seen.has(r.step)) return undefined
  if (maker === undefined) return diag(`no step makes "${ref}": there is no step "${r.step}"; steps: ${[...seen.keys()].join(", ")}`)
  const makes = (maker.stage.outputs as Record<string, string>)[r.output]
  if (makes === undefined) return diag(`no step makes "${ref}": step "${r.step}" (stage ${maker.stage.name}) makes ${Object.keys(maker.stage.outputs).join(", ") || "nothing"}`)
  if (!kindOk(want, makes)) return diag(`expected a ${want} artifact, ${r.step}.${r.output} is a ${makes}`)
  return { kind: "step", step: r.step, output: r.output }
}

/** Every step's inputs: references, kinds, missing ones. */
function resolveInputs(c: StepCheck, declared: readonly Declared[], model: ModelRef, seen: ReadonlyMap<string, DocPath>): Map<string, Record<string, InputSource>> {
  const byName = new Map(declared.map((d) => [d.name, d]))
  const resolved = new Map<string, Record<string, InputSource>>()
  for (const d of declared) {
    const inputs: Record<string, InputSource> = {}
    const wanted = d.stage.inputs as Record<string, string>
    for (const [input, ref] of Object.entries(d.inputs)) {
      const want = wanted[input]
      if (want === undefined) {
        c.diags.push(c.p.src.diag([...d.at, "inputs", input], `stage "${d.stage.name}" has no input "${input}"; its inputs: ${Object.keys(wanted).join(", ") || "none"}`, "key"))
        continue
      }
      const s = resolveInput(c, d, input, ref, want, model, byName, seen)
      if (s !== undefined) inputs[input] = s
    }
    for (const [input, kind] of Object.entries(wanted)) {
      if (!(input in d.inputs)) {
        c.diags.push(c.p.src.diag(Object.keys(d.inputs).length > 0 ? [...d.at, "inputs"] : d.at, `missing input "${input}" (a ${kind} artifact) for stage "${d.stage.name}"`))
      }
    }
    resolved.set(d.name, inputs)
  }
  return resolved
}

/** File order, each step after its makers; a cycle is an error. */
function orderSteps(c: StepCheck, declared: readonly Declared[], resolved: ReadonlyMap<string, Record<string, InputSource>>): string[] {
  const byName = new Map(declared.map((d) => [d.name, d]))
  const order: string[] = []
  const state = new Map<string, "visiting" | "done">()
  const reported = new Set<string>()
  const visit = (name: string, trail: string[]): void => {
    if (state.get(name) === "done") return
    if (state.get(name) === "visiting") {
      const cycle = [...trail.slice(trail.indexOf(name)), name]
      const id = [...new Set(cycle)].sort().join(" ")
      if (reported.has(id)) return
      reported.add(id)
      const first = byName.get(name)!
      const ref = Object.entries(resolved.get(name) ?? {}).find(([, s]) => s.kind === "step" && cycle.includes(s.step))
      c.diags.push(c.p.src.diag(ref === undefined ? first.at : [...first.at, "inputs", ref[0]], `cycle: ${cycle.join(" -> ")}`))
      return
    }
    state.set(name, "visiting")
    for (const s of Object.values(resolved.get(name) ?? {})) if (s.kind === "step" && byName.has(s.step)) visit(s.step, [...trail, name])
    state.set(name, "done")
    order.push(name)
  }
  for (const d of declared) visit(d.name, [])
  return order
}

/** The built-ins, the caller's plugins; a clash is a diagnostic at the top of the file. */
function baseRegistry(p: Parsed, options: LoadOptions, diags: Diagnostic[]): Registry {
  const registry = new Registry()
  const reg = (plugin: Plugin, source: string) => {
    const clash = registry.register(plugin, source)
    if (clash !== undefined) diags.push(p.src.diag([], clash))
  }
  for (const plugin of options.builtins ?? []) reg(plugin, "builtin")
  for (const plugin of options.plugins ?? []) reg(plugin, "embedded")
  return registry
}

export const loadWorkflow = (file: string, options: LoadOptions = {}): Effect.Effect<Workflow, WorkflowInvalid> =>
  Effect.gen(function* () {
    // a short list: past 20 problems the rest are usually consequences
    const fail = (d: Diagnostic[]) => Effect.fail(new WorkflowInvalid({ diagnostics: d.slice(0, 20) }))
    const p = parseFile(resolve(file))
    if (Array.isArray(p)) return yield* fail(p)
    const diags: Diagnostic[] = []
    const registry = baseRegistry(p, options, diags)
    const top = decodeAt(p.src, Top, p.raw, [], false)
    if (Result.isFailure(top)) return yield* fail([...diags, ...unknownTopKeys(p, registry), ...top.failure])
    yield* registerFilePlugins(p, top.success, registry, diags)
    diags.push(...unknownTopKeys(p, registry))
    if (diags.length > 0) return yield* fail(diags) // a missing plugin would make every later error noise

    const wf = top.success
    const { model, step: modelStep } = resolveModel(p, wf, registry, diags)
    const entries = stepEntries(p, diags)
    const settings = decodeSettings(p, registry, diags)
    const c: StepCheck = { p, registry, diags, files: [], byMap: isMap(p.doc.get("steps", true)) }
    const { declared, seen } = declareSteps(c, entries, wf.seed)
    const resolved = resolveInputs(c, declared, model, seen)
    const order = orderSteps(c, declared, resolved)
    if (diags.length > 0) return yield* fail(diags)

    const byName = new Map(declared.map((d) => [d.name, d]))
    const steps: ResolvedStep[] = modelStep === undefined ? [] : [modelStep]
    for (const name of order) {
      const d = byName.get(name)!
      steps.push({ name, stage: d.stage, params: d.params, paramsJson: d.paramsJson, seed: d.seed, inputs: resolved.get(name) ?? {}, synthetic: false })
    }
    return {
      file: p.abs, hash: `sha256:${sha256(p.text)}`, name: wf.name, seed: wf.seed, model, plugins: registry.plugins, registry, steps, files: c.files, settings,
    } satisfies Workflow
  })
