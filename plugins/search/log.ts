/**
 * Search logs and factor files.
 *
 * - ropeway's own log: one entry per completed generation (population with fitness, best so far,
 *   evaluation counts, seconds), appended by the stage from `strategy.progress(state)`.
 * - LongRoPE's log JSON (`genetic_base.py::log`): {"iteration", "population": [[genome, ppl], …],
 *   "history": [[genome, ppl], …]}. The genome vector is LongRoPE's layout: dim_piece_mono puts α, β
 *   first. ropeway's extra genes extend it: n̂ leads the factors (the internal dim_mono_n layout),
 *   m trails them. So: [α, β]? [n̂]? λ_0 … λ_{d/2−1} [m]?
 *   LongRoPE logs `iteration` i with the parents *before* breeding generation i, and a recovery breeds
 *   generation i again from them; an EvolutionaryState that has completed k child generations exports
 *   iteration k with its parents, so the two resume the same way.
 * - Factor CSVs: d/2 floats one per line (numpy savetxt), result_itNNN.csv / result_final.csv.
 */
import { rank, initEvolutionary, type EvolutionaryParams, type EvolutionaryState, type Member } from "./evolutionary.ts"
import type { HalvingState } from "./halving.ts"
import { sameGenome } from "./grid.ts"
import { Rng } from "../../common/rng.ts"
import { isValid, type Genes } from "./space.ts"
import { sanitizeFitness, WORST, type Genome, type Progress, type SearchContext } from "./types.ts"

// ---------- ropeway's log ----------

export interface LoggedIndividual {
  readonly genome: Genome
  readonly fitness: number
}

export interface SearchLogEntry {
  readonly generation: number
  readonly evaluations: number
  readonly fullEvaluations: number
  /**
   * Seconds since the start of the search, in logs from before ropeway made artifacts reproducible; the
   * step's result and the run manifest hold its time.
   */
  readonly seconds?: number
  readonly best: LoggedIndividual | null
  /** Best first. */
  readonly population: readonly LoggedIndividual[]
}

export interface SearchLog {
  readonly format: "ropeway-search-log"
  readonly version: 1
  readonly strategy: string
  readonly entries: readonly SearchLogEntry[]
}

export const emptySearchLog = (strategy: string): SearchLog => ({ format: "ropeway-search-log", version: 1, strategy, entries: [] })

/** Appends the state's progress as an entry (replacing an entry of the same generation, so a resumed run can re-append). */
export function appendToLog(log: SearchLog, progress: Progress, seconds?: number): SearchLog {
  const entry: SearchLogEntry = {
    generation: progress.generation,
    evaluations: progress.evaluations,
    fullEvaluations: progress.fullEvaluations,
    ...(seconds === undefined ? {} : { seconds }),
    best: progress.best === undefined ? null : { genome: progress.best.genome, fitness: progress.best.fitness },
    population: progress.population.map((m) => ({ genome: m.genome, fitness: m.fitness })),
  }
  return { ...log, entries: [...log.entries.filter((e) => e.generation !== entry.generation), entry] }
}

// ---------- LongRoPE log ----------

export type LongRoPEEntry = [number[], number | null]

export interface LongRoPELog {
  readonly iteration: number
  readonly population: readonly LongRoPEEntry[]
  readonly history: readonly LongRoPEEntry[]
}

export function encodeGenome(genes: Genes, g: Genome): number[] {
  const out: number[] = []
  if (genes.space.kind === "dim_piece_mono") out.push(g.alpha ?? 0, g.beta ?? 0)
  if (genes.startToken !== undefined) out.push(g.startToken ?? 0)
  out.push(...g.factors)
  if (genes.attentionScale !== undefined) out.push(g.attentionScale ?? 1)
  return out
}

export function decodeGenome(genes: Genes, v: readonly number[]): Genome {
  const piece = genes.space.kind === "dim_piece_mono"
  const lead = (piece ? 2 : 0) + (genes.startToken !== undefined ? 1 : 0)
  const trail = genes.attentionScale !== undefined ? 1 : 0
  if (v.length !== lead + genes.space.dims + trail) {
    throw new Error(`LongRoPE log: a genome has ${v.length} numbers, expected ${lead + genes.space.dims + trail} (${lead} leading, ${genes.space.dims} factors, ${trail} trailing)`)
  }
  let g: Genome = { factors: v.slice(lead, lead + genes.space.dims) }
  let k = 0
  if (piece) {
    g = { ...g, alpha: v[0] as number, beta: v[1] as number }
    k = 2
  }
  if (genes.startToken !== undefined) g = { ...g, startToken: v[k] as number }
  if (trail === 1) g = { ...g, attentionScale: v[v.length - 1] as number }
  return g
}

const entry = (genes: Genes, m: Member): LongRoPEEntry => [encodeGenome(genes, m.genome), m.fitness]

export function evolutionaryToLongRoPELog(state: EvolutionaryState): LongRoPELog {
  return {
    iteration: Math.max(0, state.generation - 1),
    population: rank(state.population).slice(0, state.params.parents).map((m) => entry(state.genes, m)),
    history: state.history.map((m) => entry(state.genes, m)),
  }
}

/** The halving strategy's full-fidelity part: elites as population, full-fidelity trials as history. */
export function halvingToLongRoPELog(state: HalvingState): LongRoPELog {
  const last = state.rungs.length - 1
  return {
    iteration: state.generation,
    population: rank(state.elites).map((m) => entry(state.genes, m)),
    history: state.trials.filter((t) => t.rung === last).map((t) => entry(state.genes, t)),
  }
}

/** Python's json writes inf/nan as bare Infinity/NaN, which JSON.parse rejects; they become null. */
export function parseLongRoPELog(text: string): LongRoPELog {
  const data: unknown = JSON.parse(text.replace(/-?\bInfinity\b|\bNaN\b/g, "null"))
  const fail = (what: string): never => {
    throw new Error(`LongRoPE log: ${what}`)
  }
  if (typeof data !== "object" || data === null) return fail("expected a JSON object")
  const o = data as Record<string, unknown>
  const iteration = o["iteration"]
  if (typeof iteration !== "number" || !Number.isInteger(iteration) || iteration < 0) return fail(`"iteration" must be a non-negative integer`)
  const list = (key: string, required: boolean): LongRoPEEntry[] => {
    const v = o[key]
    if (v === undefined && !required) return []
    if (!Array.isArray(v)) return fail(`"${key}" must be a list`)
    return v.map((e: unknown, i: number): LongRoPEEntry => {
      if (!Array.isArray(e) || e.length !== 2 || !Array.isArray(e[0]) || !(e[1] === null || typeof e[1] === "number")) {
        return fail(`"${key}"[${i}] must be [[numbers…], ppl]`)
      }
      const genome = e[0] as unknown[]
      if (genome.some((x) => typeof x !== "number")) return fail(`"${key}"[${i}][0] must hold numbers only`)
      return [genome as number[], e[1] as number | null]
    })
  }
  return { iteration, population: list("population", true), history: list("history", false) }
}

export const stringifyLongRoPELog = (log: LongRoPELog): string => JSON.stringify(log, null, 4)

/**
 * An evolutionary state that continues a LongRoPE log: it breeds generation `iteration` from the
 * logged population, rejecting duplicates against the logged history. The RNG is seeded from the seed
 * and the iteration (numpy's stream cannot be reproduced), so a resume from a ropeway-written log is
 * deterministic but not identical to the uninterrupted run; resume from the JSON State for that.
 */
export function resumeFromLongRoPELog(ctx: SearchContext, params: Partial<EvolutionaryParams>, log: LongRoPELog): EvolutionaryState {
  const base = initEvolutionary(ctx, params)
  const genes = base.genes
  let nextId = 0
  const toMember = (e: LongRoPEEntry): Member => ({ id: nextId++, genome: decodeGenome(genes, e[0]), fitness: e[1] === null ? WORST : sanitizeFitness(e[1]) })
  // Out-of-space history entries (e.g. the released dim_piece_mono's initial α = β = 0) still count as
  // seen; only in-space individuals can be parents.
  const history = log.history.map(toMember)
  const population: Member[] = []
  for (const e of log.population) {
    const m = toMember(e)
    const h = history.find((x) => x.fitness === m.fitness && sameGenome(x.genome, m.genome))
    if (h === undefined) history.push(m)
    if (isValid(genes, m.genome)) population.push(h ?? m)
  }
  if (population.length === 0) throw new Error(`LongRoPE log: no individual of the population is in the search space (${base.params.space})`)
  const rng = Rng.seeded(base.params.seed + 1000003 * (log.iteration + 1))
  return { ...base, rng: rng.state(), generation: log.iteration + 1, population, history, pending: [], nextId }
}

// ---------- factor CSVs ----------

/** d/2 floats one per line, as numpy.savetxt writes a vector (shortest round-trip decimal). */
export const formatFactorsCsv = (factors: readonly number[]): string => factors.map((x) => String(x)).join("\n") + "\n"

/** Rows of a factor CSV: one value per line, one comma-separated row, or a (layers × d/2) matrix. */
export function parseFactorsCsv(text: string): number[][] {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"))
  const rows = lines.map((l, i) =>
    l.split(",").map((cell) => {
      const x = Number(cell.trim())
      if (cell.trim() === "" || !Number.isFinite(x)) throw new Error(`factor CSV line ${i + 1}: "${cell.trim()}" is not a number`)
      return x
    }),
  )
  if (rows.length === 0) throw new Error("factor CSV: no values")
  if (rows.every((r) => r.length === 1)) return [rows.map((r) => r[0] as number)]
  const width = (rows[0] as number[]).length
  if (rows.some((r) => r.length !== width)) throw new Error("factor CSV: rows of different lengths")
  return rows
}

/** The factor vector of a CSV; per-layer files must have identical rows (every published one does). */
export function factorsFromCsv(text: string, dims?: number): number[] {
  const rows = parseFactorsCsv(text)
  const first = rows[0] as number[]
  if (rows.some((r) => r.some((x, i) => x !== first[i]))) throw new Error("factor CSV: per-layer rows differ; a single vector was expected")
  if (dims !== undefined && first.length !== dims) throw new Error(`factor CSV: ${first.length} factors, expected ${dims}`)
  return first
}

/** LongRoPE's file names: result_it005.csv for iteration 5, result_final.csv. */
export const resultCsvName = (iteration: number | "final"): string =>
  iteration === "final" ? "result_final.csv" : `result_it${String(iteration).padStart(3, "0")}.csv`
