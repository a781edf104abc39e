/**
 * What the report reads besides metrics.json: search logs (ropeway's own, or LongRoPE's log JSON) and
 * ropeway factor-set files. Inputs may be files or folders (a search step's output folder); every JSON
 * file inside is recognised by its content, so the report does not depend on how a stage names its files.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { basename, join, relative } from "node:path"
import { type FactorSetFile, parseFactorSetFile } from "../rope/formats.ts"
import type { ConvergencePoint } from "./charts.ts"

/** A search's history as the convergence chart needs it (from either log format). */
export interface SearchHistory {
  /** Where it came from (file name relative to the input). */
  readonly name: string
  readonly strategy: string
  readonly population: readonly ConvergencePoint[]
  readonly best: ReadonlyArray<{ readonly evaluations: number; readonly fitness: number }>
  readonly generations: number
  readonly evaluations: number
  readonly fullEvaluations: number | undefined
  readonly seconds: number | undefined
  /** The best individual's genome, as logged. */
  readonly bestGenome: Readonly<Record<string, unknown>> | undefined
  readonly bestFitness: number | undefined
}

export interface NamedFactorSet {
  readonly name: string
  readonly file: FactorSetFile
}

export interface ReportExtras {
  readonly searches: SearchHistory[]
  readonly factorSets: NamedFactorSet[]
}

type Json = Record<string, unknown>
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v)
const finite = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v)

const LONGROPE_LOG = "LongRoPE log"

/** ropeway's search log (plugins/search/log.ts): one entry per generation. */
export function historyFromRopewayLog(name: string, log: Json): SearchHistory {
  const entries = Array.isArray(log["entries"]) ? log["entries"].filter(isObject) : []
  const population: ConvergencePoint[] = []
  const best: Array<{ evaluations: number; fitness: number }> = []
  let last: Json | undefined
  for (const e of entries) {
    const evaluations = finite(e["evaluations"]) ? e["evaluations"] : 0
    const generation = finite(e["generation"]) ? e["generation"] : 0
    for (const m of Array.isArray(e["population"]) ? e["population"] : []) {
      if (isObject(m) && finite(m["fitness"])) population.push({ evaluations, generation, fitness: m["fitness"] })
    }
    const b = e["best"]
    if (isObject(b) && finite(b["fitness"])) best.push({ evaluations, fitness: b["fitness"] })
    last = e
  }
  const lastBest = last !== undefined && isObject(last["best"]) ? last["best"] : undefined
  return {
    name,
    strategy: typeof log["strategy"] === "string" ? log["strategy"] : "search",
    population,
    best,
    generations: entries.length,
    evaluations: last !== undefined && finite(last["evaluations"]) ? last["evaluations"] : 0,
    fullEvaluations: last !== undefined && finite(last["fullEvaluations"]) ? last["fullEvaluations"] : undefined,
    seconds: last !== undefined && finite(last["seconds"]) ? last["seconds"] : undefined,
    bestGenome: lastBest !== undefined && isObject(lastBest["genome"]) ? lastBest["genome"] : undefined,
    bestFitness: lastBest !== undefined && finite(lastBest["fitness"]) ? lastBest["fitness"] : undefined,
  }
}

/**
 * LongRoPE's log keeps every evaluation in order in `history` (no generation marks): each evaluation is
 * a point, best-so-far is the running minimum. Python writes inf/NaN bare; they read as failures.
 */
export function historyFromLongRoPELog(name: string, log: Json): SearchHistory {
  const hist = Array.isArray(log["history"]) ? log["history"] : []
  const population: ConvergencePoint[] = []
  const best: Array<{ evaluations: number; fitness: number }> = []
  let min = Infinity
  let minGenome: unknown
  hist.forEach((e, i) => {
    const f = Array.isArray(e) ? e[1] : undefined
    if (!finite(f)) return
    population.push({ evaluations: i + 1, generation: i, fitness: f })
    if (f < min) {
      min = f
      minGenome = Array.isArray(e) ? e[0] : undefined
      best.push({ evaluations: i + 1, fitness: f })
    }
  })
  if (best.length > 0) best.push({ evaluations: hist.length, fitness: min })
  return {
    name,
    strategy: LONGROPE_LOG,
    population,
    best,
    generations: finite(log["iteration"]) ? log["iteration"] + 1 : 0,
    evaluations: hist.length,
    fullEvaluations: undefined,
    seconds: undefined,
    bestGenome: Array.isArray(minGenome) ? { vector: minGenome } : undefined,
    bestFitness: Number.isFinite(min) ? min : undefined,
  }
}

/** Classifies one parsed JSON value; undefined when it is neither a log nor a factor set. */
export function classify(name: string, value: unknown): { search: SearchHistory } | { factorSet: NamedFactorSet } | undefined {
  if (!isObject(value)) return undefined
  if (value["format"] === "ropeway-search-log") return { search: historyFromRopewayLog(name, value) }
  if (value["format"] === "ropeway-factor-set") {
    // the rope plugin's own check (lengths, positivity, set order), with errors that name the path in the file
    return { factorSet: { name, file: parseFactorSetFile(JSON.stringify(value), `${name} (not a valid factor-set file)`) } }
  }
  if (finite(value["iteration"]) && Array.isArray(value["population"])) return { search: historyFromLongRoPELog(name, value) }
  return undefined
}

const jsonFiles = (path: string, depth = 3): string[] => {
  if (!statSync(path).isDirectory()) return [path]
  if (depth === 0) return []
  return readdirSync(path)
    .sort()
    .flatMap((n) => {
      const p = join(path, n)
      return statSync(p).isDirectory() ? jsonFiles(p, depth - 1) : n.endsWith(".json") ? [p] : []
    })
}

/**
 * Reads every search log and factor set found in the given files/folders (other JSON is ignored). A file
 * named directly is parsed whatever its extension (store outputs have none); with `strict` (default) one
 * that is not JSON is an error, otherwise it is skipped.
 */
export function loadExtras(paths: readonly (string | { readonly path: string; readonly label: string })[], opts: { readonly strict?: boolean } = {}): ReportExtras {
  const out: ReportExtras = { searches: [], factorSets: [] }
  for (const entry of paths) {
    // a label (the step that wrote the folder) prefixes the names, so two steps' search-log.json stay apart
    const { path: root, label } = typeof entry === "string" ? { path: entry, label: undefined } : entry
    if (!existsSync(root)) throw new Error(`${root}: no such file or folder`)
    const searches: SearchHistory[] = []
    for (const file of jsonFiles(root)) {
      const local = file === root ? basename(file) : relative(root, file)
      const name = label === undefined ? local : `${label}/${local}`
      let value: unknown
      try {
        // LongRoPE (Python) logs may hold bare Infinity/NaN
        value = JSON.parse(readFileSync(file, "utf8").replace(/-?\bInfinity\b|\bNaN\b/g, "null"))
      } catch {
        if (file === root && opts.strict !== false) throw new Error(`${file}: expected a search log or factor-set JSON file, got something that is not JSON`)
        continue
      }
      const c = classify(name, value)
      if (c === undefined) continue
      if ("search" in c) searches.push(c.search)
      else out.factorSets.push(c.factorSet)
    }
    // a search step's folder holds its history twice (ours and LongRoPE's format): keep ours, it has generations
    const ours = searches.filter((s) => s.strategy !== LONGROPE_LOG)
    out.searches.push(...(ours.length > 0 ? ours : searches))
  }
  return out
}
