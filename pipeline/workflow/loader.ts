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
 *   cluster: { ... }           # optional, passed through to whoever runs the fan-out
 * Steps may reference any step in the file; they run in file order, moved after their inputs' makers.
 * Quote `${...}` inside a flow mapping (`inputs: { a: "${steps.x.y}" }`): there `{` is YAML syntax.
 * A step's params are checked against its stage's Schema (unknown keys are errors), then by the stage's
 * own `validate` hook (nested params a plugin owns); the cache key holds the params in encoded form after
 * decoding, so a default left out and written out are the same.
 * Corpus paths (`params.data: { source: corpus, path }`, every built-in stage's form) are resolved against
 * this file's folder, like `model:`, and the stage and the cache key see the absolute path; one that does
 * not exist is a plan problem with its position, and `run` stops on it before any step.
 */
import { parseClusterSettings } from "../cluster/store.ts"
import { Effect, Result, Schema, SchemaIssue } from "effect"
import { existsSync, readFileSync, statSync } from "node:fs"
import { fileURLToPath, pathToFileURL } from "node:url"
import { dirname, isAbsolute, join, resolve } from "node:path"
import { resolve as resolveModule } from "import-meta-resolve"
import { isMap, isSeq, LineCounter, parseDocument } from "yaml"
import { builtinPlugins } from "./builtins.ts"
import { type Diagnostic, type DocPath, SourceMap, WorkflowInvalid } from "./diagnostics.ts"
import { canonicalJson, sha256 } from "./hash.ts"
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
  /** Corpora the steps read, resolved against the workflow's folder. */
  readonly files: readonly ExternalFile[]
  readonly cluster: unknown
}

export interface LoadOptions {
  /** Plugins registered after the built-ins and before the file's own (tests, embedding programs). */
  readonly plugins?: readonly Plugin[]
}

/** The step name a built-in model's build step takes; reserved. */
export const MODEL_STEP = "model"

const TOP_KEYS = ["name", "seed", "model", "plugins", "steps", "cluster"] as const
const STEP_KEYS = ["name", "stage", "params", "inputs", "seed", "description"] as const

const Top = Schema.Struct({
  name: Schema.String.check(
    Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, { message: "Expected a name of letters, digits, '.', '_' or '-' (it names the run folder)" }),
  ),
  seed: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0, { message: "Expected an integer >= 0" })),
  model: Schema.optionalKey(Schema.NonEmptyString),
  plugins: Schema.optionalKey(Schema.Array(Schema.NonEmptyString)),
  steps: Schema.Unknown,
  cluster: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown)),
})

const StepShape = Schema.Struct({
  name: Schema.optionalKey(Schema.String),
  stage: Schema.NonEmptyString,
  params: Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown)),
  inputs: Schema.optionalKey(Schema.Record(Schema.String, Schema.String)),
  seed: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
  description: Schema.optionalKey(Schema.String),
})

/** Decodes `value` (at `base` in the document); on failure returns one diagnostic per issue. */
const decodeAt = <A>(
  src: SourceMap,
  schema: Schema.Codec<A, any, never, never>,
  value: unknown,
  base: DocPath,
  excess: boolean,
): Result.Result<A, Diagnostic[]> => {
  const r = Schema.decodeUnknownResult(schema)(value, { errors: "all", ...(excess ? { onExcessProperty: "error" } : {}) })
  if (Result.isSuccess(r)) return Result.succeed(r.success)
  const issues = SchemaIssue.makeFormatterStandardSchemaV1()(r.failure.issue).issues
  return Result.fail(
    issues.map((i) => {
      const path = [...base, ...(i.path ?? []).map((p) => (typeof p === "object" ? p.key : p))] as Array<string | number>
      const got = src.source(path)
      const excessKey = i.message.includes("excess property")
      const last = String(path[path.length - 1])
      const msg = excessKey
        ? `unknown key "${last}"`
        : i.message === "Missing key"
        ? `missing key "${last}"`
        : `${i.message}${got !== undefined && !i.message.includes("Missing") ? `, got ${got}` : ""}`
      return src.diag(path, msg, excessKey ? "key" : "value")
    }),
  )
}

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

/** Levenshtein distance, for "did you mean". */
const editDistance = (a: string, b: string): number => {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length]!
}

const kindOk = (want: string, have: string): boolean => want === "any" || have === "any" || want === have

/**
 * `data: { source: "corpus", path }` with the path resolved against the workflow's folder, or undefined
 * when the params hold no relative corpus path. Only this top-level form: it is what every built-in stage
 * reads, and a user's stage that follows it gets the same resolution.
 */
const corpusPath = (params: unknown): { data: Record<string, unknown>; path: string } | undefined => {
  if (typeof params !== "object" || params === null) return undefined
  const data = (params as Record<string, unknown>)["data"]
  if (typeof data !== "object" || data === null || Array.isArray(data)) return undefined
  const d = data as Record<string, unknown>
  return d["source"] === "corpus" && typeof d["path"] === "string" && d["path"] !== "" ? { data: d, path: d["path"] } : undefined
}

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

export const loadWorkflow = (file: string, options: LoadOptions = {}): Effect.Effect<Workflow, WorkflowInvalid> =>
  Effect.gen(function* () {
    const abs = resolve(file)
    // a short list: past 20 problems the rest are usually consequences
    const fail = (d: Diagnostic[]) => Effect.fail(new WorkflowInvalid({ diagnostics: d.slice(0, 20) }))
    let text: string
    try {
      text = readFileSync(abs, "utf8")
    } catch {
      return yield* fail([{ file: abs, line: 1, column: 1, path: "", message: "workflow file not found or unreadable" }])
    }
    const lines = new LineCounter()
    const doc = parseDocument(text, { lineCounter: lines, keepSourceTokens: true, prettyErrors: false })
    if (doc.errors.length > 0) {
      // only the first: the parser's later errors are mostly echoes of it
      return yield* fail(
        doc.errors.slice(0, 1).map((e) => ({
          file: abs,
          ...(({ line, col }) => ({ line, column: col }))(lines.linePos(e.pos[0])),
          path: "",
          message: `YAML syntax error: ${e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")}`,
        })),
      )
    }
    const src = new SourceMap(abs, doc, lines, text)
    const raw: unknown = doc.toJS()
    if (!isMap(doc.contents)) return yield* fail([src.diag([], "expected a mapping with name, seed and steps")])
    const rawObj = raw as Record<string, unknown>

    // ---- top level --------------------------------------------------------------------------
    const diags: Diagnostic[] = []
    for (const k of Object.keys(rawObj)) {
      if (!(TOP_KEYS as readonly string[]).includes(k)) {
        diags.push(src.diag([k], `unknown key "${k}"; expected one of: ${TOP_KEYS.join(", ")}`, "key"))
      }
    }
    const top = decodeAt(src, Top, rawObj, [], false)
    if (Result.isFailure(top)) diags.push(...top.failure)
    if (diags.length > 0 || Result.isFailure(top)) return yield* fail(diags)
    const wf = top.success
    const dir = dirname(abs)

    // ---- plugins: built-ins, then the caller's, then the file's ------------------------------
    const registry = new Registry()
    const reg = (p: Plugin, source: string, at: DocPath) => {
      const clash = registry.register(p, source)
      if (clash !== undefined) diags.push(src.diag(at, clash))
    }
    for (const p of builtinPlugins()) reg(p, "builtin", [])
    for (const p of options.plugins ?? []) reg(p, "embedded", [])
    for (const [i, spec] of (wf.plugins ?? []).entries()) {
      const got = yield* Effect.promise(() => importPlugins(spec, dir))
      if (typeof got === "string") diags.push(src.diag(["plugins", i], got))
      else for (const p of got.plugins) reg(p, got.source, ["plugins", i])
    }
    if (diags.length > 0) return yield* fail(diags) // a missing plugin would make every later error noise

    // ---- model -----------------------------------------------------------------------------
    let model: ModelRef = { kind: "none" }
    const steps: ResolvedStep[] = []
    if (wf.model !== undefined) {
      const entry = registry.models.get(wf.model)
      if (entry !== undefined) {
        if (typeof entry.value["materialize"] !== "function") {
          diags.push(src.diag(["model"], `model "${wf.model}" is a model family, not a model: give a path to a Hugging Face folder`))
        } else {
          model = { kind: "builtin", name: wf.model, plugin: entry.plugin }
          steps.push({
            name: MODEL_STEP,
            stage: builtinModelStage(entry.value, entry.plugin),
            params: {},
            paramsJson: {},
            seed: wf.seed,
            inputs: {},
            synthetic: true,
          })
        }
      } else {
        const path = isAbsolute(wf.model) ? wf.model : join(dir, wf.model)
        const exists = existsSync(path)
        if (!exists && !looksLikePath(wf.model) && !wf.model.includes("/")) {
          const known = [...registry.models.values()].filter((m) => typeof m.value["materialize"] === "function")
          diags.push(
            src.diag(["model"],
              `unknown model "${wf.model}": no built-in model of that name (known: ${known.map((m) => m.value.name).join(", ") || "none"}) and no folder ${path}`),
          )
        }
        model = { kind: "path", spec: wf.model, path, exists }
      }
    }

    // ---- steps: shape, stage, params --------------------------------------------------------
    const stepsNode = doc.get("steps", true)
    const entries: Array<{ at: DocPath; name: string; value: unknown }> = []
    if (isSeq(stepsNode)) {
      const arr = rawObj["steps"] as unknown[]
      arr.forEach((v, i) => {
        const name = typeof v === "object" && v !== null ? (v as Record<string, unknown>)["name"] : undefined
        if (typeof name !== "string" || name === "") diags.push(src.diag(["steps", i], "a step in a list needs `name: <step name>`"))
        else entries.push({ at: ["steps", i], name, value: v })
      })
    } else if (isMap(stepsNode)) {
      for (const [name, v] of Object.entries(rawObj["steps"] as Record<string, unknown>)) entries.push({ at: ["steps", name], name, value: v })
    } else {
      diags.push(src.diag(["steps"], "expected `steps:` to be a mapping of step name to step, or a list of steps"))
    }
    if (entries.length === 0 && diags.length === 0) diags.push(src.diag(["steps"], "expected at least one step"))
    if (wf.cluster !== undefined) {
      try {
        parseClusterSettings(wf.cluster)
      } catch (e) {
        diags.push(src.diag(["cluster"], e instanceof Error ? e.message : String(e)))
      }
    }

    const seen = new Map<string, DocPath>()
    const files: ExternalFile[] = []
    const declared: Array<{ at: DocPath; name: string; stage: AnyStage; inputs: Record<string, string>; params: unknown; paramsJson: unknown; seed: number }> = []
    for (const e of entries) {
      if (!/^[A-Za-z0-9_-]+$/.test(e.name) || e.name === MODEL_STEP) {
        diags.push(src.diag(e.at, `step name "${e.name}" must be letters, digits, _ or - (and not "${MODEL_STEP}", the workflow's model)`, "key"))
        continue
      }
      if (seen.has(e.name)) {
        diags.push(src.diag(e.at, `duplicate step name "${e.name}"`, "key"))
        continue
      }
      seen.set(e.name, e.at)
      if (typeof e.value !== "object" || e.value === null || Array.isArray(e.value)) {
        diags.push(src.diag(e.at, "expected a step: a mapping with `stage:`, and optionally `params:`, `inputs:`, `seed:`"))
        continue
      }
      const v = e.value as Record<string, unknown>
      let bad = false
      for (const k of Object.keys(v)) {
        if (!(STEP_KEYS as readonly string[]).includes(k) || (k === "name" && isMap(stepsNode))) {
          diags.push(src.diag([...e.at, k], `unknown key "${k}" in a step; expected one of: stage, params, inputs, seed, description`, "key"))
          bad = true
        }
      }
      const shape = decodeAt(src, StepShape, v, e.at, false)
      if (Result.isFailure(shape)) {
        diags.push(...shape.failure)
        continue
      }
      if (bad) continue
      const s = shape.success
      const stage = registry.stage(s.stage)
      if (stage === undefined) {
        const names = registry.names("stages")
        const near = names.filter((n) => editDistance(n, s.stage) <= 2)
        diags.push(src.diag([...e.at, "stage"],
          `unknown stage "${s.stage}"; available: ${names.join(", ") || "none"}${near.length > 0 ? ` (did you mean ${near.map((n) => `"${n}"`).join(" or ")}?)` : ""}`))
        continue
      }
      const params = decodeAt(src, stage.params, s.params ?? {}, [...e.at, "params"], true)
      if (Result.isFailure(params)) {
        diags.push(...params.failure)
        continue
      }
      let decoded: unknown = params.success
      const corpus = corpusPath(decoded)
      if (corpus !== undefined) {
        // Resolved before the cache key is made: the same text in two folders names two corpora.
        const path = isAbsolute(corpus.path) ? corpus.path : resolve(dir, corpus.path)
        decoded = { ...(decoded as Record<string, unknown>), data: { ...corpus.data, path } }
        const at = [...e.at, "params", "data", "path"]
        files.push({ step: e.name, path, exists: existsSync(path), where: src.diag(at, `corpus not found: ${path}`) })
      }
      const issues = runValidate(stage, decoded, { registry, dir })
      if (issues.length > 0) {
        for (const i of issues) diags.push(src.diag([...e.at, "params", ...i.path], i.message, i.at ?? "value"))
        continue
      }
      let paramsJson: unknown
      try {
        paramsJson = JSON.parse(canonicalJson(Schema.encodeUnknownSync(stage.params)(decoded)))
      } catch {
        paramsJson = JSON.parse(canonicalJson(s.params ?? {}))
      }
      declared.push({ at: e.at, name: e.name, stage, inputs: s.inputs ?? {}, params: decoded, paramsJson, seed: s.seed ?? wf.seed })
    }

    // ---- inputs: references, kinds, missing ones -------------------------------------------
    const byName = new Map(declared.map((d) => [d.name, d]))
    const resolved = new Map<string, Record<string, InputSource>>()
    for (const d of declared) {
      const inputs: Record<string, InputSource> = {}
      const wanted = d.stage.inputs as Record<string, string>
      for (const [input, ref] of Object.entries(d.inputs)) {
        const at = [...d.at, "inputs", input]
        const want = wanted[input]
        if (want === undefined) {
          const names = Object.keys(wanted)
          diags.push(src.diag(at, `stage "${d.stage.name}" has no input "${input}"; its inputs: ${names.join(", ") || "none"}`, "key"))
          continue
        }
        const r = parseRef(ref)
        if (r === undefined) {
          diags.push(src.diag(at, `expected an artifact reference: <step>.<output>, \${steps.<step>.<output>} or model, got ${JSON.stringify(ref)}`))
        } else if (r === "model") {
          if (model.kind === "none") diags.push(src.diag(at, "refers to the workflow's model, but the workflow has no `model:`"))
          else if (!kindOk(want, "model")) diags.push(src.diag(at, `expected a ${want} artifact, the workflow's model is a model`))
          else inputs[input] = model.kind === "builtin" ? { kind: "step", step: MODEL_STEP, output: "model" } : { kind: "path", path: model.path }
        } else {
          const maker = byName.get(r.step)
          const makes = maker === undefined ? undefined : (maker.stage.outputs as Record<string, string>)[r.output]
          if (maker === undefined && seen.has(r.step)) {
            // the maker exists but is invalid: its own error says why, a second one here is noise
          } else if (maker === undefined) {
            diags.push(src.diag(at, `no step makes "${ref}": there is no step "${r.step}"; steps: ${[...seen.keys()].join(", ")}`))
          } else if (makes === undefined) {
            diags.push(src.diag(at, `no step makes "${ref}": step "${r.step}" (stage ${maker.stage.name}) makes ${Object.keys(maker.stage.outputs).join(", ") || "nothing"}`))
          } else if (!kindOk(want, makes)) {
            diags.push(src.diag(at, `expected a ${want} artifact, ${r.step}.${r.output} is a ${makes}`))
          } else inputs[input] = { kind: "step", step: r.step, output: r.output }
        }
      }
      for (const [input, kind] of Object.entries(wanted)) {
        if (!(input in d.inputs)) {
          diags.push(src.diag(d.inputs && Object.keys(d.inputs).length > 0 ? [...d.at, "inputs"] : d.at,
            `missing input "${input}" (a ${kind} artifact) for stage "${d.stage.name}"`))
        }
      }
      resolved.set(d.name, inputs)
    }

    // ---- order: file order, each step after its makers; a cycle is an error -----------------
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
        diags.push(src.diag(ref === undefined ? first.at : [...first.at, "inputs", ref[0]], `cycle: ${cycle.join(" -> ")}`))
        return
      }
      state.set(name, "visiting")
      for (const s of Object.values(resolved.get(name) ?? {})) {
        if (s.kind === "step" && byName.has(s.step)) visit(s.step, [...trail, name])
      }
      state.set(name, "done")
      order.push(name)
    }
    for (const d of declared) visit(d.name, [])
    if (diags.length > 0) return yield* fail(diags)

    for (const name of order) {
      const d = byName.get(name)!
      steps.push({ name, stage: d.stage, params: d.params, paramsJson: d.paramsJson, seed: d.seed, inputs: resolved.get(name) ?? {}, synthetic: false })
    }
    return {
      file: abs,
      hash: `sha256:${sha256(text)}`,
      name: wf.name,
      seed: wf.seed,
      model,
      plugins: registry.plugins,
      registry,
      steps,
      files,
      cluster: wf.cluster,
    } satisfies Workflow
  })
