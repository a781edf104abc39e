/**
 * metrics.json: every number a run measured, each with how it was measured.
 *
 *   { "perplexity": [{ method, model, length, value, interval, protocol, samples, ... }],
 *     "passkey":    [{ method, model, length, accuracy, interval, trials, ... }],
 *     "retrieval":  [{ task, method, model, length, depth?, accuracy, partial, trials, ... }],
 *     "tasks":      [{ task, method, model, length, acc, acc_norm, items, ... }],
 *     "short": [...], "search": [...] }
 *
 * `method` names the RoPE setting (none, pi, ntk, yarn, longrope, model, ...), `model` the checkpoint
 * ("base" or the step that made it). Every measured number carries its interval and sample count as an
 * `Estimate` (intervals.ts): `interval` beside a plain value, or the value itself an Estimate in the newer
 * lists. Files written before intervals (no `interval`, no `retrieval` or `tasks`) still read.
 * Stages write their own metrics.json as an artifact (kind "metrics"); `writeRunMetrics` merges a run's
 * into `<run>/metrics.json`.
 */
import { Schema } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { writeFileAtomic } from "../../common/files.ts"
import { withDefault } from "../../common/schema.ts"
import { Estimate } from "./intervals.ts"

/** The artifact kind stages declare for a metrics.json output. */
export const METRICS_KIND = "metrics"

const Json = Schema.Record(Schema.String, Schema.Unknown)

export const PerplexityEntry = Schema.Struct({
  method: Schema.NonEmptyString,
  model: Schema.NonEmptyString,
  /** Tokens per window, BOS included (the evaluation length). */
  length: Schema.Int.check(Schema.isGreaterThanOrEqualTo(2)),
  value: Schema.Finite,
  /** `value` with its bootstrap interval and the units (documents or windows) it was resampled over. */
  interval: Schema.optionalKey(Estimate),
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
  /** The evaluation's side-by-side group (evaluate's `sideBySide`): the report lays its checkpoints side by side. */
  group: Schema.optionalKey(Schema.NonEmptyString),
  /** Every scored window's NLL sum and token count, by document id: paired comparisons resample these. */
  nll: Schema.optionalKey(Schema.Array(Schema.Struct({ doc: Schema.String, sum: Schema.Finite, count: Schema.Int }))),
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
  /** `accuracy` with its Wilson interval over the trials. */
  interval: Schema.optionalKey(Estimate),
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
  group: Schema.optionalKey(Schema.NonEmptyString),
})
export type PasskeyEntry = typeof PasskeyEntry.Type

/** Short-context fidelity: perplexity at the original length, and KL to the base model's distribution. */
export const ShortEntry = Schema.Struct({
  method: Schema.NonEmptyString,
  model: Schema.NonEmptyString,
  length: Schema.Int,
  perplexity: Schema.Finite,
  /** `perplexity` with its bootstrap interval over the documents. */
  interval: Schema.optionalKey(Estimate),
  /** Mean over positions and samples of KL(base ‖ method), nats per token. */
  kl: Schema.Finite,
  /** `kl` with its bootstrap interval over the documents. */
  klInterval: Schema.optionalKey(Estimate),
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

/** A RULER-shaped retrieval task (plugins/eval/retrieval.ts) at one length (and depth) under one method. */
export const RetrievalEntry = Schema.Struct({
  task: Schema.NonEmptyString,
  method: Schema.NonEmptyString,
  model: Schema.NonEmptyString,
  /** Prompt (BOS included) + generated tokens fit in it. */
  length: Schema.Int,
  /** Share of the haystack before the needles asked about (absent: each needle at random). */
  depth: Schema.optionalKey(Schema.Finite),
  /** Trials with every expected value generated, with a Wilson interval. */
  accuracy: Estimate,
  /** Mean share of expected values generated (RULER's score), with a bootstrap interval over trials. */
  partial: Estimate,
  trials: Schema.Int,
  seed: Schema.Int,
  haystack: Schema.String,
  prompts: Schema.String,
  promptTokens: Schema.Array(Schema.Int),
  /** Per trial: the values expected and the text generated. */
  expected: Schema.Array(Schema.Array(Schema.String)),
  generated: Schema.Array(Schema.String),
  /** Tokens generated per trial, at most (the answer's tokens + 4 unless set). */
  maxNew: Schema.Int,
  policy: Schema.String,
  scale: Schema.Finite,
  rope: Schema.String,
})
export type RetrievalEntry = typeof RetrievalEntry.Type

/** A multiple-choice task (plugins/eval/multiple-choice.ts) scored under one method. */
export const TaskEntry = Schema.Struct({
  task: Schema.NonEmptyString,
  method: Schema.NonEmptyString,
  model: Schema.NonEmptyString,
  /** The longest request allowed (the original context L0). */
  length: Schema.Int,
  /** lm-eval's acc, acc_norm (by characters) and acc_bytes, each with a Wilson interval over the items. */
  acc: Estimate,
  acc_norm: Estimate,
  acc_bytes: Estimate,
  items: Schema.Int,
  shots: Schema.Int,
  /** Where the items came from: files, or the built-in task with its seed. */
  source: Schema.String,
  /** Items whose context was cut from the left to fit `length`. */
  truncated: Schema.Int,
  scoring: Schema.String,
  rope: Schema.String,
})
export type TaskEntry = typeof TaskEntry.Type

export const Metrics = Schema.Struct({
  perplexity: Schema.Array(PerplexityEntry),
  passkey: Schema.Array(PasskeyEntry),
  retrieval: Schema.Array(RetrievalEntry).pipe(withDefault([])),
  tasks: Schema.Array(TaskEntry).pipe(withDefault([])),
  // rows in the stage's full shape keep every field; other shapes (older runs, plugins) pass as records
  short: Schema.Array(Schema.Union([ShortEntry, Json])),
  search: Schema.Array(Json),
})
export type Metrics = typeof Metrics.Type

export const emptyMetrics = (): Metrics => ({ perplexity: [], passkey: [], retrieval: [], tasks: [], short: [], search: [] })

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
  JSON.stringify([kind, e["task"] ?? null, e["method"], e["model"], e["length"], e["protocol"] ?? null, e["name"] ?? null, e["depth"] ?? null])

/**
 * Concatenates metrics; an entry measuring the same thing as an earlier one (same kind, task, method,
 * model, length, protocol and depth) replaces it in place, so merging a re-run gives one number per measurement.
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
    retrieval: merge("retrieval", parts.map((p) => p.retrieval)),
    tasks: merge("tasks", parts.map((p) => p.tasks)),
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
