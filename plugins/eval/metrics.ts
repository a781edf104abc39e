/**
 * metrics.json: every number a run measured, each with how it was measured.
 *
 *   { "perplexity": [{ method, model, length, value, protocol, samples, ... }],
 *     "passkey":    [{ method, model, length, accuracy, trials, ... }],
 *     "short": [...], "search": [...] }
 *
 * `method` names the RoPE setting (none, pi, ntk, yarn, longrope, model, ...), `model` the checkpoint
 * ("base" or the step that made it). Stages write their own metrics.json as an artifact (kind "metrics");
 * `writeRunMetrics` merges a run's into `<run>/metrics.json`.
 */
import { Schema } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { writeFileAtomic } from "../../common/files.ts"

/** The artifact kind stages declare for a metrics.json output. */
export const METRICS_KIND = "metrics"

const Json = Schema.Record(Schema.String, Schema.Unknown)

export const PerplexityEntry = Schema.Struct({
  method: Schema.NonEmptyString,
  model: Schema.NonEmptyString,
  /** Tokens per window, BOS included (the evaluation length). */
  length: Schema.Int.check(Schema.isGreaterThanOrEqualTo(2)),
  value: Schema.Finite,
  /** "truncate" | "sliding" | "chunked" (others may come: needle). */
  protocol: Schema.NonEmptyString,
  /** Ids of the documents scored (corpus locations or synthetic(seed=…)#i). */
  samples: Schema.Array(Schema.String),
  /** How BOS was handled, e.g. "prepended to every window" or "replaces the first token of each chunk". */
  bos: Schema.String,
  /** How the value aggregates: "exp(mean of per-window mean NLL)" or "exp(token-weighted mean NLL)". */
  aggregation: Schema.String,
  /** Sliding windows' stride (tokens). */
  stride: Schema.optionalKey(Schema.Int),
  /** Sample documents left out at this length, shorter than its window (evaluate's minTokens). */
  skipped: Schema.optionalKey(Schema.Int),
  windows: Schema.Int,
  /** Tokens whose NLL went into the value. */
  tokens: Schema.Int,
  /** length / original context (RoPE methods scale by max(1, this)). */
  scale: Schema.Finite,
  /** The RoPE table used, as its method describes it. */
  rope: Schema.String,
  /** Where the samples came from. */
  data: Schema.String,
})
export type PerplexityEntry = typeof PerplexityEntry.Type

export const PasskeyEntry = Schema.Struct({
  method: Schema.NonEmptyString,
  model: Schema.NonEmptyString,
  /** The target: every prompt has fewer tokens than this (BOS included). */
  length: Schema.Int,
  /** correct / trials. */
  accuracy: Schema.Finite,
  trials: Schema.Int,
  // The rest say how (the stage writes them all; hand-made files may leave them out).
  /** Share of the filler before the info line (absent: uniformly random per trial, as the paper). */
  depth: Schema.optionalKey(Schema.Finite),
  correct: Schema.optionalKey(Schema.Int),
  /** The prompts' seed (each trial's prompt: see `prompts`). */
  seed: Schema.optionalKey(Schema.Int),
  prompts: Schema.optionalKey(Schema.String),
  /** Tokens of each trial's prompt (BOS included). */
  promptTokens: Schema.optionalKey(Schema.Array(Schema.Int)),
  /** Each trial's pass key, and the first integer generated (null: none). */
  keys: Schema.optionalKey(Schema.Array(Schema.Int)),
  answers: Schema.optionalKey(Schema.Array(Schema.NullOr(Schema.Finite))),
  maxNew: Schema.optionalKey(Schema.Int),
  /** How generation handled the RoPE table (generate's boundary policy). */
  policy: Schema.optionalKey(Schema.String),
  scale: Schema.optionalKey(Schema.Finite),
  rope: Schema.optionalKey(Schema.String),
})
export type PasskeyEntry = typeof PasskeyEntry.Type

/** Short-context fidelity: perplexity at the original length, and KL to the base model's distribution. */
export const ShortEntry = Schema.Struct({
  method: Schema.NonEmptyString,
  model: Schema.NonEmptyString,
  length: Schema.Int,
  perplexity: Schema.Finite,
  /** Mean over positions and samples of KL(base ‖ method), nats per token. */
  kl: Schema.Finite,
  /** The base distribution: a method name on the same checkpoint ("none": plain RoPE). */
  baseline: Schema.NonEmptyString,
  samples: Schema.Array(Schema.String),
  divergence: Schema.String,
  aggregation: Schema.String,
  bos: Schema.String,
  positions: Schema.Int,
  /** The extension's scale the baselines are set to (the model's own method picks its table by length). */
  scale: Schema.Finite,
  rope: Schema.String,
  data: Schema.String,
})
export type ShortEntry = typeof ShortEntry.Type

export const Metrics = Schema.Struct({
  perplexity: Schema.Array(PerplexityEntry),
  passkey: Schema.Array(PasskeyEntry),
  // rows in the stage's full shape keep every field; other shapes (older runs, plugins) pass as records
  short: Schema.Array(Schema.Union([ShortEntry, Json])),
  search: Schema.Array(Json),
})
export type Metrics = typeof Metrics.Type

export const emptyMetrics = (): Metrics => ({ perplexity: [], passkey: [], short: [], search: [] })

/** Validates (throws an Error naming the file and the first problem). */
export function parseMetrics(value: unknown, where = "metrics.json"): Metrics {
  try {
    return Schema.decodeUnknownSync(Metrics)(value)
  } catch (e) {
    throw new Error(`${where}: not a valid metrics file: ${e instanceof Error ? e.message : String(e)}`)
  }
}

export function readMetrics(path: string): Metrics {
  return parseMetrics(JSON.parse(readFileSync(path, "utf8")), path)
}

/** Validates, then writes through a temp file and a rename (readers never see half a file). */
export function writeMetrics(path: string, m: Metrics): void {
  const checked = parseMetrics(m, path)
  writeFileAtomic(path, `${JSON.stringify(checked, null, 2)}\n`)
}

const identity = (kind: string, e: Record<string, unknown>): string =>
  JSON.stringify([kind, e["method"], e["model"], e["length"], e["protocol"] ?? null, e["name"] ?? null, e["depth"] ?? null])

/**
 * Concatenates metrics; an entry measuring the same thing as an earlier one (same kind, method, model,
 * length, protocol and passkey depth) replaces it in place, so merging a re-run gives one number per measurement.
 */
export function mergeMetrics(...parts: readonly Metrics[]): Metrics {
  const merge = <A extends object>(kind: string, lists: ReadonlyArray<readonly A[]>): A[] => {
    const out: A[] = []
    const at = new Map<string, number>()
    for (const list of lists) {
      for (const e of list) {
        const id = identity(kind, e as Record<string, unknown>)
        const i = at.get(id)
        if (i === undefined) {
          at.set(id, out.length)
          out.push(e)
        } else out[i] = e
      }
    }
    return out
  }
  return {
    perplexity: merge("perplexity", parts.map((p) => p.perplexity)),
    passkey: merge("passkey", parts.map((p) => p.passkey)),
    short: merge("short", parts.map((p) => p.short)),
    search: merge("search", parts.map((p) => p.search)),
  }
}

/** What writeRunMetrics needs of a run manifest (pipeline/workflow's Manifest has it). */
interface ManifestLike {
  readonly steps: ReadonlyArray<{ readonly outputs: Readonly<Record<string, { readonly kind: string; readonly path: string }>> }>
}

/**
 * Merges every metrics artifact of a run (in step order) into `<runDir>/metrics.json`. Returns the path,
 * or undefined when no step made metrics.
 */
export function writeRunMetrics(runDir: string, manifest: ManifestLike): string | undefined {
  const files = manifest.steps.flatMap((s) => Object.values(s.outputs).filter((o) => o.kind === METRICS_KIND && existsSync(o.path)).map((o) => o.path))
  if (files.length === 0) return undefined
  const path = join(runDir, "metrics.json")
  writeMetrics(path, mergeMetrics(...files.map(readMetrics)))
  return path
}
