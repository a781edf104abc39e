/**
 * Intervals for every number an evaluation reports, with the sample count beside it:
 *
 *   wilson     accuracies (k correct of n trials): the Wilson score interval, which stays inside [0, 1]
 *              and keeps a sensible width at k = 0 or k = n, where the normal (Wald) interval collapses.
 *   bootstrap  anything else (perplexity, mean partial scores): the percentile bootstrap, resampling the
 *              named units (documents, windows, trials) with replacement from a seeded stream, so the
 *              same inputs and seed give the same interval on every machine.
 *
 * An `Estimate` is plain JSON (metrics.json holds it); its Effect Schema checks it on the way in and out.
 * With few units the bootstrap interval is too narrow (it cannot see variation the sample lacks; one
 * unit gives [value, value]): `n` is carried so a reader can judge.
 */
import { Schema } from "effect"
import { Rng } from "../../common/rng.ts"

export const INTERVAL_METHODS = ["wilson", "bootstrap-percentile"] as const
export type IntervalMethod = (typeof INTERVAL_METHODS)[number]

const Level = Schema.Finite.check(Schema.isGreaterThan(0), Schema.isLessThan(1))
const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** A measured value with its interval and how it was made. */
export const Estimate = Schema.Struct({
  value: Schema.Finite,
  lo: Schema.Finite,
  hi: Schema.Finite,
  /** Coverage of [lo, hi], e.g. 0.95. */
  level: Level,
  /** How many units the value is measured on (trials, documents, windows, items: see `unit`). */
  n: Count.check(Schema.isGreaterThanOrEqualTo(1)),
  /** What `n` counts; for the bootstrap also what was resampled. */
  unit: Schema.NonEmptyString,
  method: Schema.Literals(INTERVAL_METHODS),
  /** wilson: the k of k/n. */
  successes: Schema.optionalKey(Count),
  /** bootstrap: resamples drawn, and the seed of their stream. */
  replicates: Schema.optionalKey(Count.check(Schema.isGreaterThanOrEqualTo(1))),
  seed: Schema.optionalKey(Schema.Int),
}).check(Schema.makeFilter((e) => (e.lo <= e.hi ? undefined : { path: ["lo"], issue: `lo ${e.lo} is above hi ${e.hi}` })))
export type Estimate = typeof Estimate.Type

/** The Wilson interval levels supported (their normal quantiles are tabulated). */
export const WILSON_LEVELS = [0.8, 0.9, 0.95, 0.98, 0.99, 0.999] as const

/** Two-sided standard normal quantiles z_{(1+level)/2} for the levels reports use. */
const Z: Readonly<Record<(typeof WILSON_LEVELS)[number], number>> = {
  0.8: 1.2815515655446004,
  0.9: 1.6448536269514722,
  0.95: 1.959963984540054,
  0.98: 2.3263478740408408,
  0.99: 2.5758293035489004,
  0.999: 3.2905267314918945,
}
const zFor = (level: number): number => {
  const z = (Z as Readonly<Record<string, number>>)[String(level)]
  if (z === undefined) throw new RangeError(`Wilson interval: level ${level} not supported (one of ${Object.keys(Z).join(", ")})`)
  return z
}

/** The Wilson score interval of `successes` of `trials` (an accuracy). */
export function wilson(successes: number, trials: number, opts: { readonly level?: number; readonly unit?: string } = {}): Estimate {
  if (!Number.isSafeInteger(trials) || trials < 1) throw new RangeError(`Wilson interval: trials must be an integer ≥ 1, got ${trials}`)
  if (!Number.isSafeInteger(successes) || successes < 0 || successes > trials) throw new RangeError(`Wilson interval: successes must be an integer in [0, ${trials}], got ${successes}`)
  const level = opts.level ?? 0.95
  const z = zFor(level)
  const n = trials
  const p = successes / n
  const z2n = (z * z) / n
  const center = (p + z2n / 2) / (1 + z2n)
  const half = (z * Math.sqrt(p * (1 - p) / n + z2n / (4 * n))) / (1 + z2n)
  // exact at the ends: k = 0 has lo 0 and k = n has hi 1 (rounding could leave 1e-17 either way)
  const lo = successes === 0 ? 0 : Math.max(0, center - half)
  const hi = successes === n ? 1 : Math.min(1, center + half)
  return { value: p, lo, hi, level, n, unit: opts.unit ?? "trials", method: "wilson", successes }
}

export interface BootstrapOptions {
  /** What a unit is ("documents", "windows", "trials"): `n` counts them and they are what is resampled. */
  readonly unit: string
  /** Default 2000. */
  readonly replicates?: number
  /** Default 0. */
  readonly seed?: number
  /** Default 0.95. */
  readonly level?: number
}

/** Stream of the bootstrap's draws under its seed (independent of every other seeded stream). */
export const BOOTSTRAP_STREAM = 0xb007

/** Linear interpolation between order statistics (R's type 7, NumPy's default) of a sorted array. */
export const quantileSorted = (sorted: ArrayLike<number>, q: number): number => {
  const h = (sorted.length - 1) * q
  const i = Math.floor(h)
  const a = sorted[i]!
  return i + 1 < sorted.length ? a + (h - i) * (sorted[i + 1]! - a) : a
}

/**
 * Percentile bootstrap of `statistic` over `units`: the value is the statistic of the units as given;
 * each replicate draws units.length of them with replacement; [lo, hi] are the replicates'
 * (1 − level)/2 and (1 + level)/2 quantiles.
 */
export function bootstrap<U>(units: readonly U[], statistic: (sample: readonly U[]) => number, opts: BootstrapOptions): Estimate {
  const n = units.length
  if (n < 1) throw new RangeError(`bootstrap over ${opts.unit}: no units`)
  const replicates = opts.replicates ?? 2000
  const seed = opts.seed ?? 0
  const level = opts.level ?? 0.95
  if (!Number.isSafeInteger(replicates) || replicates < 1) throw new RangeError(`bootstrap: replicates must be an integer ≥ 1, got ${replicates}`)
  if (!(level > 0 && level < 1)) throw new RangeError(`bootstrap: level must be in (0, 1), got ${level}`)
  const value = statistic(units)
  if (!Number.isFinite(value)) throw new RangeError(`bootstrap over ${opts.unit}: the statistic is ${value}`)
  const rng = Rng.seeded(seed, BOOTSTRAP_STREAM)
  const stats = new Float64Array(replicates)
  const sample: U[] = new Array<U>(n)
  for (let r = 0; r < replicates; r++) {
    for (let i = 0; i < n; i++) sample[i] = units[rng.int(0, n - 1)]!
    stats[r] = statistic(sample)
  }
  stats.sort()
  const lo = quantileSorted(stats, (1 - level) / 2)
  const hi = quantileSorted(stats, (1 + level) / 2)
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new RangeError(`bootstrap over ${opts.unit}: a replicate's statistic is not finite`)
  return { value, lo, hi, level, n, unit: opts.unit, method: "bootstrap-percentile", replicates, seed }
}

/** How an evaluation makes its intervals (the evaluate stage's `intervals` param, plus the data seed). */
export interface IntervalOptions {
  readonly level: number
  readonly replicates: number
  /** What a perplexity's bootstrap resamples. */
  readonly resample: "documents" | "windows"
  readonly seed: number
}

export const mean = (xs: readonly number[]): number => xs.reduce((a, x) => a + x, 0) / xs.length

/** Bootstrap interval of a mean (e.g. RULER's partial scores over trials). */
export const meanInterval = (xs: readonly number[], opts: BootstrapOptions): Estimate => bootstrap(xs, mean, opts)

// ---- perplexity ------------------------------------------------------------------------------------

/** A scored window: its NLL sum and token count, and the document it came from. */
export interface WindowNll {
  readonly doc: string | number
  readonly sum: number
  readonly count: number
}

/**
 * How windows make one perplexity: "window-mean" = exp(mean over windows of each window's mean NLL)
 * (LongRoPE / YaRN, truncate and sliding); "token-weighted" = exp(total NLL / total tokens) (llama.cpp).
 */
export type PerplexityAggregation = "window-mean" | "token-weighted"

export function perplexityOf(windows: readonly Pick<WindowNll, "sum" | "count">[], aggregation: PerplexityAggregation): number {
  if (windows.length === 0) return Number.NaN
  const tokenWeighted = aggregation === "token-weighted"
  let num = 0
  let den = 0
  for (const w of windows) {
    num += tokenWeighted ? w.sum : w.sum / w.count
    den += tokenWeighted ? w.count : 1
  }
  return Math.exp(num / den)
}

/**
 * A perplexity with a bootstrap interval. `resample: "documents"` (default) draws whole documents with
 * all their windows (windows of one document are correlated, so this is the honest unit);
 * `"windows"` draws windows independently. `n` counts the units drawn from.
 */
export function perplexityInterval(
  windows: readonly WindowNll[],
  aggregation: PerplexityAggregation,
  opts: Omit<BootstrapOptions, "unit"> & { readonly resample?: "documents" | "windows" } = {},
): Estimate {
  const resample = opts.resample ?? "documents"
  const { resample: _, ...rest } = opts
  if (resample === "windows") return bootstrap(windows, (s) => perplexityOf(s, aggregation), { ...rest, unit: "windows" })
  const byDoc = new Map<string | number, WindowNll[]>()
  for (const w of windows) {
    const list = byDoc.get(w.doc)
    if (list === undefined) byDoc.set(w.doc, [w])
    else list.push(w)
  }
  return bootstrap([...byDoc.values()], (s) => perplexityOf(s.flat(), aggregation), { ...rest, unit: "documents" })
}

/**
 * The ratio of two perplexities measured on the same documents (A / B, e.g. two checkpoints), with a
 * paired bootstrap interval: each replicate draws documents common to both and recomputes both
 * perplexities on them, so document-to-document variation both share cancels. An interval wholly below
 * 1 says A is lower on these documents beyond resampling noise.
 */
export function perplexityRatioInterval(
  a: readonly WindowNll[],
  b: readonly WindowNll[],
  aggregation: { readonly a: PerplexityAggregation; readonly b: PerplexityAggregation },
  opts: Omit<BootstrapOptions, "unit"> = {},
): Estimate {
  const byDoc = (ws: readonly WindowNll[]) => {
    const m = new Map<string | number, WindowNll[]>()
    for (const w of ws) m.set(w.doc, [...(m.get(w.doc) ?? []), w])
    return m
  }
  const da = byDoc(a)
  const db = byDoc(b)
  const common = [...da.keys()].filter((d) => db.has(d))
  if (common.length === 0) throw new RangeError("perplexity ratio: the two measurements share no document")
  const ratio = (docs: readonly (string | number)[]) =>
    perplexityOf(docs.flatMap((d) => da.get(d)!), aggregation.a) / perplexityOf(docs.flatMap((d) => db.get(d)!), aggregation.b)
  return bootstrap(common, ratio, { ...opts, unit: "documents" })
}
