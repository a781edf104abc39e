// The layers (ARCHITECTURE.md): every import points down or sideways, never up. A failure names the file,
// the import and both layers. Also: stage files stay orchestration-sized.
import { describe, expect, test } from "bun:test"
import { readdirSync, readFileSync, statSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"

const ROOT = resolve(import.meta.dirname, "..")

/** Bottom first. A file belongs to the first layer whose folder holds it. */
const LAYERS: ReadonlyArray<{ readonly name: string; readonly folders: readonly string[] }> = [
  { name: "floor", folders: ["common"] },
  { name: "kernels", folders: ["kernels"] },
  { name: "engine", folders: ["pipeline"] },
  { name: "training", folders: ["training"] },
  { name: "library", folders: ["plugins"] },
  { name: "stages", folders: ["stages"] },
  { name: "top", folders: ["cli", "cluster", "bench", "scripts"] },
]

/** A user's plugin (examples/) sees the public plugin API only, as an installed package would. */
const EXAMPLES = "examples"
const PUBLIC_API = "plugins/api.ts"

const layerOf = (file: string): number => LAYERS.findIndex((l) => l.folders.some((f) => file === f || file.startsWith(`${f}/`)))

const sources = (dir: string): string[] =>
  readdirSync(join(ROOT, dir)).flatMap((name) => {
    const rel = `${dir}/${name}`
    if (statSync(join(ROOT, rel)).isDirectory()) return name === "node_modules" ? [] : sources(rel)
    return /\.tsx?$/.test(name) ? [rel] : []
  })

/** Relative module specifiers of static imports, re-exports and dynamic imports. */
const importsOf = (file: string): string[] => {
  const text = readFileSync(join(ROOT, file), "utf8")
  const out: string[] = []
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^"'`]*?\bfrom\s*["'](\.{1,2}\/[^"']+)["']/g)) out.push(m[1]!)
  for (const m of text.matchAll(/\bimport\s*\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g)) out.push(m[1]!)
  for (const m of text.matchAll(/(?:^|\n)\s*import\s*["'](\.{1,2}\/[^"']+)["']/g)) out.push(m[1]!)
  return out
}

const target = (file: string, spec: string): string => relative(ROOT, resolve(ROOT, dirname(file), spec))

/** What is wrong with `file` importing `to`, or undefined. */
const offence = (file: string, to: string): string | undefined => {
  if (file.startsWith(`${EXAMPLES}/`)) return to.startsWith(`${EXAMPLES}/`) || to === PUBLIC_API ? undefined : `${file} imports ${to}: a plugin imports ${PUBLIC_API} only`
  const from = layerOf(file)
  const at = layerOf(to)
  if (at === -1) return `${file} imports ${to}, which is in no layer (test/ and examples/ are not importable)`
  return at > from ? `${file} (${LAYERS[from]!.name}) imports ${to} (${LAYERS[at]!.name}): an arrow up` : undefined
}

describe("layers", () => {
  const files = [...LAYERS.flatMap((l) => l.folders), EXAMPLES].flatMap(sources)

  test("every file of the layered folders belongs to a layer", () => {
    expect(files.length).toBeGreaterThan(100)
  })

  test("imports point down only", () => {
    const offences = files.flatMap((file) => importsOf(file).map((spec) => offence(file, target(file, spec)))).filter((o) => o !== undefined)
    expect(offences).toEqual([])
  })

  test("the floor imports nothing of the project but itself", () => {
    const offences = sources("common").flatMap((f) => importsOf(f).map((s) => target(f, s)).filter((t) => !t.startsWith("common/")).map((t) => `${f} imports ${t}`))
    expect(offences).toEqual([])
  })

  test("the engine names no stage, plugin or cluster", () => {
    const offences = sources("pipeline").filter((f) => /\b(stages|plugins|cluster)\//.test(readFileSync(join(ROOT, f), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "")))
    expect(offences).toEqual([])
  })

  test("a stage file is orchestration: at most ~300 lines", () => {
    const long = sources("stages").map((f) => [f, readFileSync(join(ROOT, f), "utf8").split("\n").length] as const).filter(([, n]) => n > 320)
    expect(long).toEqual([])
  })

  test("the checker itself: an upward import is reported, a downward one is not", () => {
    expect(offence("plugins/rope/index.ts", target("plugins/rope/index.ts", "../../stages/search.ts"))).toBe(
      "plugins/rope/index.ts (library) imports stages/search.ts (stages): an arrow up",
    )
    expect(offence("pipeline/workflow/runner.ts", "cluster/index.ts")).toContain("an arrow up")
    expect(offence("training/loop.ts", "plugins/data/pack.ts")).toContain("an arrow up")
    expect(offence("stages/search.ts", "plugins/search/run.ts")).toBeUndefined()
    expect(offence("bench/scoring.ts", "test/models/x.ts")).toContain("in no layer")
    expect(offence("examples/plugin/plugin.ts", "stages/search.ts")).toContain("plugins/api.ts only")
    expect(offence("examples/plugin/plugin.ts", "plugins/api.ts")).toBeUndefined()
    expect(importsOf("test/layers.test.ts")).toEqual([])
  })
})
