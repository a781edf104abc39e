// Shared by the pipeline tests: temp folders, loading from inline YAML, running quietly.
import { Effect, Layer } from "effect"
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll } from "bun:test"
import {
  builtinPlugins, type Kind, layerSilent, loadWorkflow, type LoadOptions, type Manifest, type PluginInfo, runWorkflow, WorkflowInvalid, type Workflow,
} from "../../cli/workflow.ts"

export const FIXTURES = resolve(import.meta.dirname, "../fixtures/workflows")
export const fixture = (name: string): string => join(FIXTURES, name)

const dirs: string[] = []
export const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), "ropeway-test-"))
  dirs.push(d)
  return d
}
afterAll(() => {
  for (const d of dirs) removeTree(d)
})

/** Writes `yaml` into a temp folder (next to a copy-free reference to the toy plugin) and returns its path. */
export const yamlFile = (yaml: string, dir = tempDir()): string => {
  const f = join(dir, "workflow.yaml")
  writeFileSync(f, yaml.replaceAll("TOY_PLUGIN", fixture("toy-plugin.ts")))
  return f
}

/** The built-in plugins as a workflow's plugin list (and manifest) records them: first, before any other plugin. */
export const builtinPluginInfos = (): PluginInfo[] => builtinPlugins().map((p) => ({ name: p.name, version: p.version, source: "builtin" }))

/** The names of one kind that the built-in plugins alone register: every workflow registry's baseline. */
export const builtinNames = (kind: Kind): string[] => builtinPlugins().flatMap((p) => (p[kind] ?? []).map((x) => x.name)).sort()

/** A registry listing (sorted names) of the built-ins plus `extra`. */
export const withBuiltins = (kind: Kind, ...extra: string[]): string[] => [...builtinNames(kind), ...extra].sort()

export const load = (file: string, options: LoadOptions = {}): Promise<Workflow> => Effect.runPromise(loadWorkflow(file, options))

export const loadError = async (file: string, options: LoadOptions = {}): Promise<WorkflowInvalid> => {
  const r = await Effect.runPromise(Effect.result(loadWorkflow(file, options)))
  if (r._tag === "Success") throw new Error(`expected ${file} to be invalid`)
  return r.failure
}

export const run = (wf: Workflow, store: string, layer: Layer.Layer<any> = layerSilent) =>
  Effect.runPromise(runWorkflow(wf, { store, printRunDir: false }).pipe(Effect.provide(layer)))

export const readManifest = (runDir: string): Manifest => JSON.parse(readFileSync(join(runDir, "manifest.json"), "utf8")) as Manifest

/** Step name -> output name -> bytes of the file, from a manifest: what "identical artifacts" compares. */
export const artifactBytes = (m: Manifest): Record<string, Record<string, unknown>> =>
  Object.fromEntries(m.steps.map((s) => [s.name, Object.fromEntries(Object.entries(s.outputs).map(([o, r]) => [o, contents(r.path)]))]))

/** A file's text, or a folder's files' texts by name. */
const contents = (path: string): unknown =>
  statSync(path).isDirectory() ? Object.fromEntries(readdirSync(path).sort().map((n) => [n, contents(join(path, n))])) : readFileSync(path, "utf8")
export const artifactHashes = (m: Manifest): Record<string, Record<string, string>> =>
  Object.fromEntries(m.steps.map((s) => [s.name, Object.fromEntries(Object.entries(s.outputs).map(([o, r]) => [o, r.hash]))]))
