/**
 * LongRoPE's three searches (method notes §2–§3) as jobs for the search loop, and how their best genomes
 * become the factor-set file:
 * - `first`: on a base model at target length L, s = L/L0; the genome is λ itself; the initial
 *   population is PI, NTK, YaRN-init and HF YaRN at s (the last with YaRN's own m when m is a gene).
 *   Writes [identity ≤ L0, searched ≤ L].
 * - `second`: on a fine-tuned model whose factor set ends with λ_ft at L_ft; the genome is a relative
 *   vector λ_rel at s = L/L_ft initialised from YaRN-init at that scale and from λ_rel = 1 (the fine-tuned
 *   set as it is: right when the fine-tune trained positions beyond L_ft); the model runs with λ_rel ⊙ λ_ft
 *   and the product is saved, appended to the input's sets.
 * - `readjust`: searches at short `lengths` on the extended model, each initialised from the set serving
 *   that length (as is and re-targeted), YaRN-init, PI and NTK; writes the length-bucketed table: the
 *   readjusted short sets, then the input's sets above them.
 */
import { inputError } from "../../common/errors.ts"
import { mscale, type MscalePolicy, ntkFactors, piFactors, rescaleFactors, type RopeGeometry, yarnFactors, yarnGetMscale, yarnInitFactors } from "../rope/factors.ts"
import { type FactorSetFile, factorSetFromHfLongrope, factorSetToScaling, parseFactorSetFile } from "../rope/formats.ts"
import { readResearch, type ResearchSet } from "../rope/longrope-research.ts"
import type { RopeSpec } from "../rope/types.ts"
import { absoluteFactors, type TableOptions } from "./fitness.ts"
import { geneRequested } from "./params.ts"
import type { Fidelity, Genome, SearchContext } from "./types.ts"

export type SearchMode = "first" | "second" | "readjust"

/** The factor sets a `second` / `readjust` search starts from, their L0 and where they came from. */
export interface InputSets {
  readonly research: ReturnType<typeof readResearch>
  readonly L0: number
  readonly path: string
}

/** One search: checkpoint file stem and log subfolder ("" for the only one), its context, params and table. */
export interface Job {
  readonly tag: string
  readonly sctx: SearchContext
  readonly strategyParams: Readonly<Record<string, unknown>>
  /** How a genome becomes a table (length = the target length, for m). */
  readonly table: TableOptions
}

type SetEntry = FactorSetFile["sets"][number]

export interface ModePlan {
  readonly jobs: readonly Job[]
  /** The factor-set file's sets from each job's best genome, the lengths searched and the overall scale. */
  readonly finish: (best: readonly Genome[]) => { sets: SetEntry[]; lengths: number[]; scale: number }
}

/** What every mode needs besides its lengths. */
export interface ModeSetup {
  readonly geometry: RopeGeometry
  readonly L0: number
  /** Samples at full fidelity, and cheaper fidelities for multi-fidelity strategies. */
  readonly samples: number
  readonly fidelities: readonly Fidelity[] | undefined
  /** m when the genome has none (else the set's own). */
  readonly policy: MscalePolicy | undefined
  /** YaRN-init's β_fast / β_slow. */
  readonly yarn: { readonly betaFast?: number; readonly betaSlow?: number }
  readonly strategyParams: Readonly<Record<string, unknown>>
  readonly seed: number
  readonly inputSets: InputSets | undefined
}

/**
 * The input's factor sets: the `factors` file when wired (it must fit the model's geometry), else the table
 * the model folder carries (longrope-research, or HF longrope's two sets).
 */
export function readInputSets(mode: SearchMode, spec: RopeSpec, configFile: string, factorsPath: string | undefined, readText: (path: string) => string): InputSets {
  if (factorsPath !== undefined) {
    const file = parseFactorSetFile(readText(factorsPath), factorsPath)
    if (file.model.rotary_dim !== spec.rotaryDim || file.model.base !== spec.base) {
      throw inputError(factorsPath, `factor set is for rotary_dim ${file.model.rotary_dim}, base ${file.model.base}; the model has ${spec.rotaryDim}, ${spec.base}`)
    }
    return { research: readResearch({ ...spec, scaling: factorSetToScaling(file), scalingKey: factorsPath }), L0: file.model.original_max_position_embeddings, path: factorsPath }
  }
  const type = spec.scaling?.["rope_type"] ?? spec.scaling?.["type"]
  let research: ReturnType<typeof readResearch>
  if (type === "longrope-research") research = readResearch(spec)
  else if (type === "longrope" || type === "su") {
    const f = factorSetFromHfLongrope(spec, { run_id: null, lengths: [spec.maxPositions], scale: 1, created: "" })
    research = readResearch({ ...spec, scaling: factorSetToScaling(f) })
  } else throw inputError(configFile, `mode "${mode}" needs the model's factor set: wire a \`factors\` input (stage search-factors) or use a model whose rope_scaling is longrope-research or longrope`)
  return { research, L0: research.originalLength, path: configFile }
}

type InitVector = ArrayLike<number> | { readonly factors: ArrayLike<number>; readonly attentionScale: number }

const searchContext = (s: ModeSetup, scale: number, length: number, init: readonly InitVector[], seed: number): SearchContext => ({
  dims: s.geometry.rotaryDim / 2,
  scale,
  fidelity: { samples: s.samples, length },
  ...(s.fidelities === undefined ? {} : { fidelities: s.fidelities }),
  init: init.map((f) => ("attentionScale" in f ? { factors: Array.from(f.factors), attentionScale: f.attentionScale } : { factors: Array.from(f) })),
  seed,
})

/** n̂ / m init values for strategies that search those genes (the set's n̂, the policy's m). */
function withGeneDefaults(s: ModeSetup, t: TableOptions): Record<string, unknown> {
  const sp: Record<string, unknown> = { ...s.strategyParams }
  if (geneRequested(sp, "attentionScale") && sp["initAttentionScale"] === undefined) sp["initAttentionScale"] = mscale(t.policy, t.length / s.L0, s.L0)
  if (geneRequested(sp, "startToken") && sp["initStartToken"] === undefined && (t.startTokens ?? 0) > 0) sp["initStartToken"] = t.startTokens
  return sp
}

/** A searched set: absolute factors, m (a number when searched, else the policy), n̂. */
function searchedSet(maxLength: number, g: Genome, t: TableOptions): SetEntry {
  const out: SetEntry = { max_length: maxLength, factors: absoluteFactors(g, t.baseFactors), mscale: g.attentionScale ?? t.policy }
  const n = g.startToken ?? t.startTokens ?? 0
  return n === 0 ? out : { ...out, start_tokens: n }
}

/** A set read through longrope-research (ramps applied, policies resolved) back as a file entry. */
function entryOf(s: ResearchSet, L0: number): SetEntry {
  const factors = s.factors instanceof Float64Array ? Array.from(s.factors) : s.factors.map((r) => Array.from(r))
  const out: SetEntry = { max_length: s.maxLength, factors, mscale: s.mscale }
  const withScale = s.scale === s.maxLength / L0 ? out : { ...out, scale: s.scale }
  return s.startTokens === 0 ? withScale : { ...withScale, start_tokens: s.startTokens }
}

function vectorOf(s: ResearchSet, where: string): number[] {
  if (s.factors instanceof Float64Array) return Array.from(s.factors)
  const rows = s.factors
  const first = rows[0]!
  if (!rows.every((r) => r.every((x, i) => x === first[i]))) throw inputError(where, "per-layer factors that differ between layers are not supported by the search")
  return Array.from(first)
}

const need = (v: number | undefined, what: string, mode: SearchMode): number => {
  if (v === undefined) throw inputError(`search.${what}`, `required in mode "${mode}"`)
  return v
}

function firstMode(s: ModeSetup, length: number | undefined): ModePlan {
  const { geometry, L0 } = s
  const L = need(length, "length", "first")
  const scale = L / L0
  const table: TableOptions = { geometry, length: L, policy: s.policy ?? "su", startTokens: 0 }
  const strategyParams = withGeneDefaults(s, table)
  // HF YaRN itself (harmonic ramp), with its own 0.1·ln s + 1 when m is a gene: the strongest untrained
  // baseline is then in generation 0, so the search can only end at or below it.
  const hfYarn = yarnFactors(geometry, scale, s.yarn)
  const init: InitVector[] = [piFactors(geometry, scale), ntkFactors(geometry, scale), yarnInitFactors(geometry, scale, s.yarn),
    geneRequested(strategyParams, "attentionScale") ? { factors: hfYarn, attentionScale: yarnGetMscale(scale) } : hfYarn]
  const dims = geometry.rotaryDim / 2
  return {
    jobs: [{ tag: "", table, strategyParams, sctx: searchContext(s, scale, L, init, s.seed) }],
    finish: ([best]) => ({
      sets: L > L0 ? [{ max_length: L0, factors: new Array<number>(dims).fill(1) }, searchedSet(L, best!, table)] : [searchedSet(L, best!, table)],
      lengths: [L],
      scale,
    }),
  }
}

function secondMode(s: ModeSetup, length: number | undefined): ModePlan {
  const { geometry, L0 } = s
  const L = need(length, "length", "second")
  const sets = s.inputSets!.research.sets
  const ft = sets[sets.length - 1]!
  if (!(L > ft.maxLength)) throw inputError("search.length", `expected more than the fine-tuned length ${ft.maxLength} (the last set of ${s.inputSets!.path}), got ${L}`)
  const lambdaFt = vectorOf(ft, s.inputSets!.path)
  const sRel = L / ft.maxLength
  // YaRN-init at the relative scale, with the fine-tuned length as the "original" one.
  const relInit = yarnInitFactors({ ...geometry, originalLength: ft.maxLength }, sRel, s.yarn)
  const table: TableOptions = { geometry, length: L, policy: s.policy ?? ft.mscale, startTokens: ft.startTokens, baseFactors: lambdaFt }
  // λ_rel = 1 too: the fine-tuned set as it is, which wins when the fine-tune already trained positions up
  // to L (position skips, finetune positionSkip) and further interpolation only blurs them.
  const keep = new Float64Array(geometry.rotaryDim / 2).fill(1)
  return {
    jobs: [{ tag: "", table, strategyParams: withGeneDefaults(s, table), sctx: searchContext(s, sRel, L, [relInit, keep], s.seed) }],
    finish: ([best]) => ({ sets: [...sets.map((x) => entryOf(x, L0)), searchedSet(L, best!, table)], lengths: [L], scale: L / L0 }),
  }
}

function readjustMode(s: ModeSetup, requested: readonly number[] | undefined): ModePlan {
  const { geometry, L0 } = s
  const lengths = [...(requested ?? [])].sort((a, b) => a - b)
  if (lengths.length === 0) throw inputError("search.lengths", 'required in mode "readjust": the short lengths to readjust (e.g. [4096, 8192])')
  if (new Set(lengths).size !== lengths.length) throw inputError("search.lengths", `expected distinct lengths, got ${JSON.stringify(requested)}`)
  const sets = s.inputSets!.research.sets
  const top = lengths[lengths.length - 1]!
  if (!(top < sets[sets.length - 1]!.maxLength)) throw inputError("search.lengths", `expected lengths below the model's longest set (${sets[sets.length - 1]!.maxLength}), got ${top}`)
  const tables: TableOptions[] = []
  const jobs = lengths.map((Ls, k): Job => {
    const serving = sets.find((x) => Ls <= x.maxLength)!
    const lam: Float64Array = Float64Array.from(vectorOf(serving, s.inputSets!.path))
    const scale = Math.max(Ls / L0, 1)
    const init: ArrayLike<number>[] = [lam]
    if (serving.scale > 1 && scale !== serving.scale) init.push(rescaleFactors(lam, serving.scale, scale))
    if (scale > 1) init.push(yarnInitFactors(geometry, scale, s.yarn), piFactors(geometry, scale), ntkFactors(geometry, scale))
    else init.push(new Float64Array(geometry.rotaryDim / 2).fill(1))
    const table: TableOptions = { geometry, length: Ls, policy: s.policy ?? serving.mscale, startTokens: serving.startTokens }
    tables.push(table)
    return { tag: String(Ls), table, strategyParams: withGeneDefaults(s, table), sctx: searchContext(s, scale, Ls, init, s.seed + k) }
  })
  return {
    jobs,
    finish: (bests) => ({
      sets: [...lengths.map((Ls, k) => searchedSet(Ls, bests[k]!, tables[k]!)), ...sets.filter((x) => x.maxLength > top).map((x) => entryOf(x, L0))],
      lengths,
      scale: top / L0,
    }),
  }
}

/** The jobs of a mode and how their results become the factor-set file's sets. */
export function planMode(mode: SearchMode, s: ModeSetup, p: { readonly length?: number; readonly lengths?: readonly number[] }): ModePlan {
  if (mode === "first") return firstMode(s, p.length)
  if (mode === "second") return secondMode(s, p.length)
  return readjustMode(s, p.lengths)
}
