/**
 * A worked ropeway plugin, written against the public plugin API only (plugins/api.ts), the same API the
 * built-ins use: a new stage, a new search strategy, and a second model family.
 *
 * - `factor-report` (stage): the RoPE table the model picks at each length — per-dimension divisors
 *   λ_i = θ_i/θ'_i, start tokens n̂ and attention scale — next to the PI, NTK and YaRN baselines at the same
 *   scale. Writes `report` (JSON) and `table` (CSV, one row per length × dimension). No GPU needed.
 * - `random-search` (search strategy): each generation draws `population` random non-decreasing factor
 *   vectors in [1, s] (plus the context's initial vectors in the first), keeps the best. A baseline for
 *   the evolutionary search, and the smallest useful example of the Strategy contract: all randomness
 *   comes from an RNG whose state lives in the JSON State, so a resumed search is identical.
 * - `gpt-neox` (model family, ./neox/): GPT-NeoX / Pythia folders, not LLaMA-shaped (LayerNorm with bias,
 *   parallel attention and GELU MLP, rotary on 25% of each head), so every stage and command that opens a
 *   model (`score`, `evaluate`, `search`, ...) runs them; and `neox-tiny` (model), a seeded random one.
 *
 * In your own plugin, import from the ropeway package instead of these relative paths.
 */
import { Effect, Option, Schema } from "effect"
import { writeFileSync } from "node:fs"
import {
  type Candidate, definePlugin, defineStage, type Evaluated, familiesOf, familyFor, type Genome, methodScaling, PluginRegistry, PosInt, resolveRope, type Result, Rng,
  type RngState, StageError, type Strategy, tableFactors,
} from "../../plugins/api.ts"
import { neoxFamily } from "./neox/family.ts"
import { writeRandomNeox } from "./neox/random.ts"

// ---- the stage --------------------------------------------------------------------------------------

const BASELINES = ["pi", "ntk", "yarn"] as const

export interface FactorRow {
  readonly method: string
  readonly reason: string
  /** λ_i per frequency pair (the first layer's when the table is per layer). */
  readonly factors: number[]
  readonly startTokens: number
  readonly attentionScale: number
}

export const factorReport = defineStage({
  name: "factor-report",
  version: "1",
  description: "The RoPE table a model picks at each length (λ_i, n̂, attention scale) next to PI/NTK/YaRN at the same scale",
  params: Schema.Struct({
    lengths: Schema.NonEmptyArray(PosInt).annotate({ description: "input lengths to report" }),
    baselines: Schema.Boolean.annotate({ description: "add PI, NTK and YaRN at the same scale (default true)" }).pipe(Schema.withDecodingDefaultKey(Effect.succeed(true))),
  }),
  inputs: { model: "model" },
  outputs: { report: "json", table: "text" },
  run: (ctx) =>
    Effect.gen(function* () {
      // the model's family reads its config.json (any family a plugin registered, not only llama)
      const families = familiesOf(Option.getOrUndefined(yield* Effect.serviceOption(PluginRegistry)))
      const rows = yield* Effect.try({
        try: () => {
          const config = familyFor(families, ctx.inputs.model).readConfig(ctx.inputs.model)
          const spec = config.rope
          const L0 = spec.originalMaxPositions ?? spec.maxPositions
          const own = resolveRope(spec)
          return ctx.params.lengths.map((length) => {
            const row = (t: ReturnType<typeof own>, method: string): FactorRow => {
              const f = tableFactors(t)
              return { method, reason: t.reason, factors: Array.from(f instanceof Float64Array ? f : f[0]!), startTokens: t.startTokens, attentionScale: t.attentionScale }
            }
            const s = Math.max(1, length / L0)
            const tables = [row(own(length), "model")]
            if (ctx.params.baselines) {
              for (const m of BASELINES) {
                const scaling = methodScaling(m, s, L0)
                if (scaling !== "model") tables.push(row(resolveRope({ ...spec, originalMaxPositions: L0, scaling })(length), m))
              }
            }
            return { length, scale: length / L0, tables }
          })
        },
        catch: (e) => new StageError({ message: `factor-report: ${e instanceof Error ? e.message : String(e)}`, cause: e }),
      })
      writeFileSync(ctx.outputs.report, `${JSON.stringify({ model: "input", lengths: rows }, null, 2)}\n`)
      const csv = ["length,method,dim,factor,start_tokens,attention_scale"]
      for (const r of rows) for (const t of r.tables) t.factors.forEach((f, i) => csv.push(`${r.length},${t.method},${i},${f},${t.startTokens},${t.attentionScale}`))
      writeFileSync(ctx.outputs.table, `${csv.join("\n")}\n`)
      yield* ctx.progress.log(`factor-report: ${rows.length} lengths, ${rows[0]!.tables.length} tables each`)
      return { lengths: rows.length }
    }),
})

// ---- the search strategy ----------------------------------------------------------------------------

export interface RandomSearchParams {
  /** Random candidates per generation (8). */
  readonly population: number
  /** Generations (4). */
  readonly generations: number
}

export interface RandomSearchState {
  readonly params: RandomSearchParams
  readonly ctx: { readonly dims: number; readonly scale: number; readonly fidelity: { samples: number; length: number }; readonly init: readonly Genome[] }
  readonly rng: RngState
  readonly generation: number
  readonly nextId: number
  readonly pending: readonly Candidate[] | null
  readonly evaluations: number
  readonly population: readonly Evaluated[]
}

/** A random non-decreasing vector in [1, s]: low-frequency dims (higher i) get at least as much interpolation. */
const randomFactors = (rng: Rng, dims: number, s: number): number[] =>
  Array.from({ length: dims }, () => 1 + (s - 1) * rng.float()).sort((a, b) => a - b)

export const randomSearch: Strategy<RandomSearchParams, RandomSearchState> = {
  name: "random-search",
  resolveParams: (_ctx, p) => {
    const population = p.population ?? 8
    const generations = p.generations ?? 4
    for (const [k, v] of Object.entries({ population, generations })) {
      if (!Number.isInteger(v) || v < 1) throw new Error(`random-search.${k}: expected an integer ≥ 1, got ${JSON.stringify(v)}`)
    }
    return { population, generations }
  },
  init: (ctx, p) => ({
    params: randomSearch.resolveParams(ctx, p),
    ctx: { dims: ctx.dims, scale: ctx.scale, fidelity: { ...ctx.fidelity }, init: ctx.init },
    rng: Rng.seeded(ctx.seed, 0x7a4d).state(),
    generation: 0,
    nextId: 0,
    pending: null,
    evaluations: 0,
    population: [],
  }),
  propose: (s) => {
    if (s.pending !== null) return { state: s, candidates: s.pending }
    const rng = Rng.fromState(s.rng)
    const genomes: Genome[] = [...(s.generation === 0 ? s.ctx.init : [])]
    while (genomes.length < s.params.population + (s.generation === 0 ? s.ctx.init.length : 0)) {
      genomes.push({ factors: randomFactors(rng, s.ctx.dims, s.ctx.scale) })
    }
    const candidates = genomes.map((genome, i) => ({ id: s.nextId + i, genome, fidelity: s.ctx.fidelity }))
    return { state: { ...s, rng: rng.state(), nextId: s.nextId + candidates.length, pending: candidates }, candidates }
  },
  observe: (s, results: readonly Result[]) => {
    if (s.pending === null) throw new Error("random-search: observe without a pending batch")
    const byId = new Map(results.map((r) => [r.id, r.fitness]))
    const evaluated = s.pending.map((c) => {
      const fitness = byId.get(c.id)
      if (fitness === undefined) throw new Error(`random-search: no fitness for candidate ${c.id}`)
      return { id: c.id, genome: c.genome, fidelity: c.fidelity, fitness }
    })
    const population = [...s.population, ...evaluated].sort((a, b) => a.fitness - b.fitness).slice(0, s.params.population)
    return { ...s, pending: null, generation: s.generation + 1, evaluations: s.evaluations + evaluated.length, population }
  },
  done: (s) => s.generation >= s.params.generations,
  best: (s) => s.population[0],
  progress: (s) => ({
    generation: s.generation,
    generations: s.params.generations,
    evaluations: s.evaluations,
    fullEvaluations: s.evaluations,
    population: s.population,
    best: s.population[0],
  }),
}

/** A seeded random GPT-NeoX (Pythia-shaped, byte vocabulary, L0 256): `model: neox-tiny` in a workflow. */
export const NEOX_TINY = { vocab: 258, hidden: 64, layers: 2, heads: 2, intermediate: 256, maxPositions: 256, rotaryPct: 0.25 } as const

export default definePlugin({
  name: "example-plugin",
  version: "1.1.0",
  description: "A worked example: the factor-report stage, the random-search strategy and the GPT-NeoX model family",
  stages: [factorReport],
  searchStrategies: [{ ...randomSearch, description: "random non-decreasing factor vectors in [1, s], best kept (a baseline)", params: "population (8), generations (4)" }],
  families: [neoxFamily],
  models: [
    {
      name: "neox-tiny",
      version: "1",
      description: "a random-init GPT-NeoX (2 layers, hidden 64, rotary on 25% of each head, byte vocabulary, L0 256): untrained, for trying the family",
      materialize: (dir, ctx) =>
        Effect.try({
          try: () => void writeRandomNeox(dir, { ...NEOX_TINY, seed: ctx.seed }),
          catch: (e) => new StageError({ message: `neox-tiny: ${e instanceof Error ? e.message : String(e)}`, cause: e }),
        }),
    },
  ],
})
