/**
 * `evaluate`: perplexity by length of a model under RoPE settings (its own and the PI / NTK / YaRN /
 * plain-RoPE baselines at the same scale), by the protocols of longrope-method.md §5.1 and peers.md §4:
 *
 *   truncate  one window of L tokens per document (BOS + its first L−1 tokens), every token scored;
 *             PPL = exp(mean over windows of the window's mean NLL)      (LongRoPE / YaRN `--truncate`)
 *   sliding   windows of L starting every `stride` tokens, BOS first, only tokens no earlier window
 *             scored; PPL = exp(mean of window mean NLLs)                 (LongRoPE / YaRN default)
 *   chunked   non-overlapping chunks of L, BOS replacing each chunk's first token, the second half
 *             scored; PPL = exp(token-weighted mean NLL)                  (llama.cpp llama-perplexity)
 *
 * Forward passes are shared where the numbers allow: a pass over BOS + doc[from..to) under one RoPE table
 * gives every window with the same start and table that ends earlier (attention is causal). So truncate
 * comes free with sliding's first window, and a length-independent table (plain RoPE; every method at
 * scale 1) serves all lengths from one pass at the longest. Each pass's log-probs go to the checkpoint
 * folder, so an interrupted evaluation resumes where it stopped; passes are uninterruptible, the gaps
 * between them are not.
 *
 * Optional, on the same model and the same RoPE settings:
 *   passkey   §5.2 retrieval: the paper's prompt and filler (plugins/data passkeyPrompt, one seeded stream per
 *             trial, shared by every method), greedy `generate` of maxNew tokens, answer = the first integer;
 *             accuracy = correct / trials per (method, length[, depth]). Baselines generate under one table,
 *             their scale-L/L0 table resolved for prompt + maxNew (policy "fixed"); `model` under its own
 *             method by sequence length, re-prefilling when the table changes ("reprefill", what HF's
 *             cache-less generation in the paper's script computes).
 *   needle    LongRoPE2 §5.4: needleSample on the evaluation documents at depths (i + 10j)/99 or a list;
 *             NLL of the 7-digit answer tokens only; a perplexity row with protocol "needle".
 *   short     at L0: perplexity, and KL(base ‖ method) per position against this checkpoint under plain
 *             RoPE, from full distributions (model.distributions, float64 on the host); baselines at the
 *             extension's scale (default longest length / L0), so the row says what the extension costs.
 * Each pass, generation and short-context document is checkpointed like the perplexity passes.
 *
 * Writes metrics.json (stages/metrics.ts) with the protocol, sample ids and BOS handling beside every value.
 */
import { Context, Effect, Option, Schema } from "effect"
import { createHash } from "node:crypto"
import { existsSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { acquireRuntime, Gpu, GpuUnavailable } from "../kernels/device.ts"
import type { RopeTable } from "../kernels/rope-table.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { defineStage, StageError } from "../pipeline/workflow/stage.ts"
import { writeFileAtomic } from "../pipeline/workflow/store.ts"
import { byteTokenizer, loadTokenizer, type TextTokenizer } from "../plugins/data/tokenizer.ts"
import { openCorpus } from "../plugins/data/corpus.ts"
import { Rng } from "../plugins/data/rng.ts"
import { syntheticDocument } from "../plugins/data/synthetic.ts"
import { type DistributionRows, type LlamaModel, type LlamaSession, loadLlama } from "../plugins/models/llama/model.ts"
import { generate } from "../plugins/models/llama/generate.ts"
import { needleSample, passkeyPrompt, type PasskeyPrompt } from "../plugins/data/prompts.ts"
import { type ChosenTable, resolveRope, type RopeSpec } from "../plugins/rope/index.ts"
import { emptyMetrics, METRICS_KIND, type PasskeyEntry, type PerplexityEntry, type ShortEntry, writeMetrics } from "./metrics.ts"

// ---- protocols: windows and labels (plain arithmetic, unit-tested) -------------------------------

export const PROTOCOLS = ["truncate", "sliding", "chunked"] as const
export type Protocol = (typeof PROTOCOLS)[number]

/**
 * One forward window over a document: the model sees `[BOS] + doc[from, to)` (no BOS when the tokenizer
 * has none) and the NLL of doc tokens `[scoreFrom, scoreTo)` counts, each predicted from everything before
 * it in the window.
 */
export interface Window {
  readonly from: number
  readonly to: number
  readonly scoreFrom: number
  readonly scoreTo: number
}

/** Index into a window's log-probs (length `to − from + bos − 1`) of doc token `t`'s log-prob. */
export const logprobIndex = (w: Pick<Window, "from">, t: number, bos: boolean): number => t - w.from - 1 + (bos ? 1 : 0)

/**
 * The windows a protocol scores on a document of `n` tokens at evaluation length `L` (tokens per window,
 * BOS included). `stride` is for sliding.
 */
export function protocolWindows(protocol: Protocol, n: number, L: number, bos: boolean, stride = 256): Window[] {
  const b = bos ? 1 : 0
  const cap = L - b // document tokens per window
  if (cap < 1 + (1 - b)) throw new RangeError(`length ${L} leaves no token to score`)
  switch (protocol) {
    case "truncate": {
      const to = Math.min(n, cap)
      return to - (1 - b) > 0 ? [{ from: 0, to, scoreFrom: 1 - b, scoreTo: to }] : []
    }
    case "sliding": {
      if (!Number.isInteger(stride) || stride < 1) throw new RangeError(`stride must be an integer ≥ 1, got ${stride}`)
      const out: Window[] = []
      let prevEnd = 0
      for (let begin = 0; begin < n; begin += stride) {
        const end = Math.min(begin + cap, n)
        // only tokens no earlier window scored; without BOS a window's first token has no context
        const scoreFrom = Math.max(prevEnd, begin + 1 - b)
        if (end > scoreFrom) out.push({ from: begin, to: end, scoreFrom, scoreTo: end })
        prevEnd = end
        if (end === n) break
      }
      return out
    }
    case "chunked": {
      // llama.cpp: n/L whole chunks; BOS overwrites the chunk's first token; logits from position L/2 on
      const first = Math.floor(L / 2)
      const out: Window[] = []
      for (let c = 0; (c + 1) * L <= n; c++) out.push({ from: c * L + b, to: (c + 1) * L, scoreFrom: c * L + first + 1, scoreTo: (c + 1) * L })
      return out
    }
  }
}

export const BOS_NOTE: Record<Protocol, (bos: boolean) => string> = {
  truncate: (bos) => (bos ? "BOS prepended to the window; the document's first L−1 tokens" : "no BOS (tokenizer has none); the document's first L tokens"),
  sliding: (bos) => (bos ? "BOS prepended to every window" : "no BOS (tokenizer has none)"),
  chunked: (bos) => (bos ? "BOS replaces the first token of each chunk (llama.cpp)" : "no BOS (tokenizer has none)"),
}

export const AGGREGATION: Record<Protocol, string> = {
  truncate: "exp(mean over documents of the window's mean NLL)",
  sliding: "exp(mean over all windows of the window's mean NLL)",
  chunked: "exp(token-weighted mean NLL over all chunks' second halves)",
}

/** NLL sum and count of a window, from the log-probs of a pass that starts where the window does. */
export function windowNll(w: Window, lp: ArrayLike<number>, bos: boolean): { sum: number; count: number } {
  let sum = 0
  for (let t = w.scoreFrom; t < w.scoreTo; t++) {
    const i = logprobIndex(w, t, bos)
    const v = lp[i]
    if (v === undefined) throw new RangeError(`log-prob ${i} missing (pass too short for window ${JSON.stringify(w)})`)
    sum -= v
  }
  return { sum, count: w.scoreTo - w.scoreFrom }
}

/** Perplexity from windows' NLLs by the protocol's aggregation. */
export function aggregate(protocol: Protocol, windows: ReadonlyArray<{ sum: number; count: number }>): number {
  if (windows.length === 0) return Number.NaN
  if (protocol === "chunked") {
    let s = 0
    let c = 0
    for (const w of windows) {
      s += w.sum
      c += w.count
    }
    return Math.exp(s / c)
  }
  let m = 0
  for (const w of windows) m += w.sum / w.count
  return Math.exp(m / windows.length)
}

// ---- RoPE settings compared ----------------------------------------------------------------------

export const METHODS = ["model", "none", "pi", "ntk", "yarn"] as const
export type Method = (typeof METHODS)[number]

/**
 * The HF rope_scaling a baseline uses at scale s = max(1, L/L0) (below the original context nothing is
 * interpolated); undefined = plain RoPE; "model" = the checkpoint's own.
 */
export function methodScaling(method: Method, s: number, L0: number): Record<string, unknown> | undefined | "model" {
  switch (method) {
    case "model":
      return "model"
    case "none":
      return undefined
    case "pi":
      return { rope_type: "linear", factor: s }
    case "ntk":
      return { rope_type: "ntk", factor: s }
    case "yarn":
      return { rope_type: "yarn", factor: s, original_max_position_embeddings: L0 }
  }
}

/** Content hash of a table: equal tables (e.g. every method at scale 1) share forward passes. */
export function tableKey(t: RopeTable): string {
  const h = createHash("sha256")
  const f64 = (a: Float64Array) => h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
  h.update(`${t.rotaryDim}|${t.startTokens}|${t.attentionScale}|`)
  if (t.invFreq instanceof Float64Array) f64(t.invFreq)
  else for (const a of t.invFreq) (h.update("|layer|"), f64(a))
  h.update("|orig|")
  f64(t.originalInvFreq)
  return h.digest("hex").slice(0, 24)
}

// ---- the plan: which passes, which windows ---------------------------------------------------------

export interface Doc {
  readonly id: string
  readonly ids: readonly number[]
}

export interface Measurement {
  readonly method: Method
  readonly length: number
  readonly protocol: Protocol
  readonly table: ChosenTable
  readonly stride: number | undefined
  /** Documents left out at this length because they are shorter than its window (only with skipShort). */
  readonly skipped: number
  /** Per document: its windows, each with the pass that serves it. */
  readonly windows: ReadonlyArray<{ readonly doc: number; readonly window: Window; readonly pass: number }>
}

export interface Pass {
  readonly key: string
  readonly table: ChosenTable
  readonly doc: number
  readonly from: number
  to: number
  /** For progress notes. */
  readonly label: string
}

/**
 * Groups every window of every measurement into passes: one per (table, document, start), to the furthest
 * end. `skipShort`: a document shorter than a length's window (L − BOS tokens) is left out at that length
 * (counted in `skipped`) rather than scored on a shorter window reported as L.
 */
export function planPasses(
  requests: ReadonlyArray<{ method: Method; length: number; protocol: Protocol; table: ChosenTable; stride: number | undefined }>,
  docs: readonly Doc[],
  bos: boolean,
  skipShort = false,
): { passes: Pass[]; measurements: Measurement[] } {
  const passes: Pass[] = []
  const byKey = new Map<string, number>()
  const measurements = requests.map((r) => {
    const tk = tableKey(r.table)
    const fits = (d: Doc) => !skipShort || d.ids.length >= r.length - (bos ? 1 : 0)
    const skipped = docs.filter((d) => !fits(d)).length
    const windows = docs.flatMap((d, di) =>
      !fits(d) ? [] : protocolWindows(r.protocol, d.ids.length, r.length, bos, r.stride).map((window) => {
        const key = `${tk}:${di}:${window.from}`
        let pi = byKey.get(key)
        if (pi === undefined) {
          pi = passes.length
          byKey.set(key, pi)
          passes.push({ key, table: r.table, doc: di, from: window.from, to: window.to, label: `${r.method}@${r.length}` })
        } else {
          const p = passes[pi]!
          p.to = Math.max(p.to, window.to)
        }
        return { doc: di, window, pass: pi }
      }),
    )
    return { ...r, skipped, windows }
  })
  return { passes, measurements }
}

// ---- passkey, needle, short context: the pure parts -----------------------------------------------------

/** The paper's answer: the first run of digits in the continuation (Python's re.search(r'\d+')), as a number. */
export const firstInteger = (text: string): number | undefined => {
  const m = /\d+/.exec(text)
  return m === null ? undefined : Number(m[0])
}

export const PASSKEY_STREAM = 0x9a55
export const NEEDLE_STREAM = 0x7eed1e

/**
 * Trial `trial`'s passkey prompt at a target length: the §5.2 prompt from its own stream of the seed, so
 * every method (and every depth) sees the same pass keys, and one trial can be rebuilt alone.
 */
export const passkeyTrialPrompt = (tok: TextTokenizer, seed: number, length: number, trial: number, depth: number | undefined): PasskeyPrompt =>
  passkeyPrompt({ tokenizer: tok, targetTokens: length, rng: Rng.seeded(seed, PASSKEY_STREAM, length, trial), ...(depth === undefined ? {} : { depth }) })

/** How a row's prompts are made, for metrics.json. */
export const PASSKEY_PROMPTS = `passkeyPrompt (plugins/data/prompts.ts, longrope-method.md §5.2) with rng Rng.seeded(seed, ${PASSKEY_STREAM}, length, trial)`

/** Needle depths for document i: the given list, or LongRoPE2's (i + 10j)/99, j = 0..9 (i taken mod 10). */
export const needleDepths = (doc: number, depths: readonly number[] | undefined): number[] =>
  depths !== undefined ? [...depths] : Array.from({ length: 10 }, (_, j) => ((doc % 10) + 10 * j) / 99)

/** KL(p ‖ q) = Σ p·(ln p − ln q) of two ln-prob rows at `offset`, in float64 (terms with p = 0 vanish). */
export const klRow = (lp: Float64Array, lq: Float64Array, offset: number, vocab: number): number => {
  let kl = 0
  for (let i = offset; i < offset + vocab; i++) {
    const a = lp[i]!
    if (a === -Infinity) continue
    kl += Math.exp(a) * (a - lq[i]!)
  }
  return kl
}

// ---- what the stage scores with -------------------------------------------------------------------

/** What evaluation needs of a model (LlamaModel has it). */
export interface ScoringModel {
  readonly config: { readonly vocabSize: number; readonly rope: RopeSpec; readonly numLayers?: number }
  readonly rope: (length: number) => ChosenTable
  logprobs(tokens: Uint32Array, options: { readonly rope: RopeTable; readonly chunk?: number }): Promise<Float64Array>
  /** Incremental decoding, for passkey retrieval (needs config.numLayers too). */
  session?(capacity: number): LlamaSession
  /** Full distributions at every position under several tables, for short-context KL. */
  distributions?(tokens: Uint32Array, tables: readonly RopeTable[], onRows: DistributionRows, options?: { readonly chunk?: number }): Promise<void>
  dispose(): void
}

/**
 * Replaces how the stage loads a model folder (tests, other backends). Absent: the llama-family
 * model on the Gpu service's device (or a device acquired for this step when no Gpu is provided).
 */
export class ModelLoader extends Context.Service<ModelLoader, { readonly load: (dir: string) => Promise<ScoringModel> }>()("ropeway/ModelLoader") {}

// ---- params ----------------------------------------------------------------------------------------

const PosInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const withDefault = <S extends Schema.Top>(value: S["Encoded"]) => (s: S) => s.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value)))
/** The description `ropeway list` shows. */
const doc = (description: string) => <S extends Schema.Top>(s: S) => s.annotate({ description }) as S

const Synthetic = Schema.Struct({
  source: Schema.Literal("synthetic"),
  filler: Schema.optionalKey(Schema.Literals(["varied", "paper", "mixed"]).pipe(doc('filler text: varied sentences, the paper\'s garbage, or mixed per document (default mixed)'))),
})
const Corpus = Schema.Struct({
  source: Schema.Literal("corpus"),
  path: Schema.NonEmptyString.pipe(doc("a folder of .txt / .jsonl, or one file (relative to the workflow file)")),
  field: Schema.optionalKey(Schema.NonEmptyString.pipe(doc('JSONL field holding the text (default "text")'))),
})

const Fraction = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThanOrEqualTo(1))
const Seed = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

const PasskeyParams = Schema.Struct({
  lengths: Schema.NonEmptyArray(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))).pipe(doc("target lengths: every prompt (BOS included) has fewer tokens")),
  trials: PosInt.pipe(doc("prompts per length (and depth), the same for every method (default 10, as the paper)"), withDefault(10)),
  depths: Schema.optionalKey(Schema.NonEmptyArray(Fraction).pipe(doc("shares of the filler before the info line, for a length × depth grid (default: uniformly random per trial, as the paper)"))),
  maxNew: PosInt.pipe(doc("tokens generated per trial (default 10, the paper's max_new_tokens)"), withDefault(10)),
  seed: Schema.optionalKey(Seed.pipe(doc("prompt seed: pass keys and split points (default the step's seed)"))),
})
export type PasskeyParams = typeof PasskeyParams.Type

const NeedleParams = Schema.Struct({
  lengths: Schema.optionalKey(Schema.NonEmptyArray(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))).pipe(doc("sample lengths (default the perplexity lengths)"))),
  depths: Schema.optionalKey(Schema.NonEmptyArray(Fraction).pipe(doc("needle depths used on every document (default LongRoPE2's (i + 10j)/99 for document i, j = 0..9)"))),
  seed: Schema.optionalKey(Seed.pipe(doc("seed of the 7-digit numbers (default the data seed)"))),
})
export type NeedleParams = typeof NeedleParams.Type

const ShortParams = Schema.Struct({
  length: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2)).pipe(doc("the short length (default L0, the original context)"))),
  scale: Schema.optionalKey(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(1)).pipe(doc("the baselines' scale: the extension being judged (default longest length / L0)"))),
})
export type ShortParams = typeof ShortParams.Type

export const EvaluateParams = Schema.Struct({
  lengths: Schema.NonEmptyArray(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))).pipe(doc("evaluation lengths in tokens, BOS included")),
  methods: Schema.NonEmptyArray(Schema.Literals(METHODS)).pipe(
    doc("RoPE settings compared, each at scale max(1, length/L0); model = the checkpoint's own rope_scaling (default none, pi, ntk, yarn)"),
    withDefault(["none", "pi", "ntk", "yarn"] as const),
  ),
  protocols: Schema.NonEmptyArray(Schema.Literals(PROTOCOLS)).pipe(doc("perplexity protocols (default truncate)"), withDefault(["truncate"] as const)),
  stride: Schema.optionalKey(PosInt.pipe(doc("sliding protocol's stride (default min(256, length − 1)); longer than the window: windows every `stride` tokens, text between them unscored (LongRoPE's Books3 protocol)"))),
  samples: PosInt.pipe(doc("documents scored, the same for every method and length (default 4)"), withDefault(4)),
  seed: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(doc("data seed (default the step's seed)"))),
  tokens: Schema.optionalKey(PosInt.pipe(doc("tokens per document: documents are cut to it, shorter corpus documents skipped (default the longest length)"))),
  minTokens: Schema.optionalKey(
    PosInt.pipe(doc("corpus documents need at least this many tokens (default `tokens`); at each length, a document shorter than the window is skipped there and the entry's `skipped` counts it")),
  ),
  data: Schema.Union([Synthetic, Corpus]).pipe(doc("where documents come from (default synthetic)"), withDefault({ source: "synthetic" } as const)),
  tokenizer: Schema.optionalKey(Schema.NonEmptyString.pipe(doc('"byte" or a folder with tokenizer.json (default the model folder\'s, else "byte")'))),
  originalLength: Schema.optionalKey(PosInt.pipe(doc("L0 for the scale (default config.json's original_max_position_embeddings, else max_position_embeddings)"))),
  label: Schema.NonEmptyString.pipe(doc('what metrics.json calls the checkpoint: "base" or the step that made it (default "base")'), withDefault("base")),
  chunk: Schema.optionalKey(PosInt.pipe(doc("tokens per forward chunk (memory only)"))),
  passkey: Schema.optionalKey(PasskeyParams.pipe(doc("passkey retrieval (longrope-method.md §5.2) for every method: { lengths, trials, depths, maxNew, seed }"))),
  needle: Schema.optionalKey(NeedleParams.pipe(doc("LongRoPE2 needle-driven perplexity (NLL of the answer tokens only) on the evaluation documents: { lengths, depths, seed }"))),
  short: Schema.optionalKey(ShortParams.pipe(doc("short-context fidelity: perplexity at L0 and KL to the checkpoint under plain RoPE: { length, scale }"))),
})
export type EvaluateParams = typeof EvaluateParams.Type

// ---- the stage ---------------------------------------------------------------------------------------

const fail = (message: string, cause?: unknown) => new StageError({ message, ...(cause === undefined ? {} : { cause }) })
const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** Runs plain code that may throw, failing the stage with its message. */
const attempt = <A>(what: string, f: () => A): Effect.Effect<A, StageError> =>
  Effect.try({ try: f, catch: (e) => fail(`${what}: ${errText(e)}`, e) })

const loadDocs = (p: EvaluateParams, seed: number, tokens: number, tok: TextTokenizer): { docs: Doc[]; data: string } => {
  if (p.data.source === "synthetic") {
    const filler = p.data.filler
    const opts = { tokenizer: tok, seed, length: tokens, ...(filler === undefined ? {} : { filler }) }
    const tag = filler === undefined ? "" : `,filler=${filler}`
    const docs = Array.from({ length: p.samples }, (_, i) => ({ id: `synthetic(seed=${seed},tokens=${tokens}${tag})#${i}`, ids: syntheticDocument(opts, i).ids }))
    return { docs, data: `synthetic long-range documents (plugins/data), seed ${seed}, ${tokens} tokens each${filler === undefined ? "" : `, ${filler} filler`}, tokenizer ${tok.name}` }
  }
  // the workflow loader made it absolute (against the workflow file); a direct call resolves against the cwd
  const path = resolve(p.data.path)
  const corpus = openCorpus(path, p.data.field === undefined ? {} : { field: p.data.field })
  const need = p.minTokens ?? tokens
  // a seeded order, then the first documents long enough: the same samples for every method and length
  const order = Rng.seeded(seed, 0xe7a1).permutation(corpus.size)
  const docs: Doc[] = []
  for (const i of order) {
    const ids = tok.encode(corpus.text(i))
    if (ids.length >= need) docs.push({ id: corpus.where(i), ids: ids.slice(0, tokens) })
    if (docs.length === p.samples) break
  }
  if (docs.length < p.samples) {
    throw new Error(`only ${docs.length} of ${corpus.size} documents in ${path} have ≥ ${need} tokens (${tok.name}); need ${p.samples}`)
  }
  const shorter = need < tokens ? `, shorter ones skipped per length (minTokens ${need})` : ""
  return { docs, data: `corpus ${path}, seeded order (seed ${seed}), first ${p.samples} documents with ≥ ${need} tokens, cut to ${tokens}${shorter}, tokenizer ${tok.name}` }
}

const writeJsonAtomic = (path: string, value: unknown): void => writeFileAtomic(path, JSON.stringify(value))

/** generate() reads only config.numLayers, rope and session of a LlamaModel: a ScoringModel with those will do. */
const generator = (m: ScoringModel): LlamaModel | undefined =>
  m.session === undefined || m.config.numLayers === undefined ? undefined : (m as unknown as LlamaModel)

const sha = (text: string): string => createHash("sha256").update(text).digest("hex").slice(0, 24)

/** The model to score with: the override service, else llama on the shared (or a fresh) device. */
const acquireModel = (dir: string) =>
  Effect.gen(function* () {
    const loader = yield* Effect.serviceOption(ModelLoader)
    if (Option.isSome(loader)) {
      return yield* Effect.acquireRelease(
        Effect.tryPromise({ try: () => loader.value.load(dir), catch: (e) => fail(`cannot load the model ${dir}: ${errText(e)}`, e) }),
        (m) => Effect.sync(() => m.dispose()),
      )
    }
    const shared = yield* Effect.serviceOption(Gpu)
    const rt: GpuRuntime = Option.isSome(shared)
      ? shared.value
      : yield* Effect.acquireRelease(
          Effect.tryPromise({ try: () => acquireRuntime(), catch: (e) => fail(e instanceof GpuUnavailable ? e.message : `no GPU: ${errText(e)}`, e) }),
          (r) => Effect.sync(() => r.destroy()),
        )
    const model: ScoringModel = yield* Effect.acquireRelease(
      Effect.tryPromise({ try: () => loadLlama(rt, dir), catch: (e) => fail(`cannot load the model ${dir}: ${errText(e)}`, e) }),
      (m) => Effect.sync(() => m.dispose()),
    )
    return model
  })

export const evaluateStage = defineStage({
  name: "evaluate",
  version: "1",
  description:
    "Perplexity by length under the model's RoPE and the none/PI/NTK/YaRN baselines at the same scale; protocols truncate, sliding, chunked (recorded beside every number); optionally passkey retrieval, LongRoPE2 needle-driven perplexity and short-context fidelity (perplexity and KL at L0); writes metrics.json",
  params: EvaluateParams,
  inputs: { model: "model" },
  outputs: { metrics: METRICS_KIND },
  run: (ctx) =>
    Effect.scoped(
      Effect.gen(function* () {
        const p = ctx.params
        const seed = p.seed ?? ctx.seed
        const lengths = [...new Set(p.lengths)].sort((a, b) => a - b)
        const longest = lengths[lengths.length - 1]!
        const tokens = p.tokens ?? longest
        const dir = ctx.inputs.model

        const tok = yield* attempt("tokenizer", () =>
          p.tokenizer !== undefined ? loadTokenizer(p.tokenizer) : existsSync(join(dir, "tokenizer.json")) ? loadTokenizer(dir) : byteTokenizer())
        const bos = tok.bos !== undefined
        // a window shorter than L would be reported as L: refuse instead
        if (tokens < longest - (bos ? 1 : 0)) {
          return yield* fail(`tokens ${tokens}: documents must fill a window of the longest length ${longest} (${longest - (bos ? 1 : 0)} tokens after BOS)`)
        }
        const { docs, data } = yield* attempt("data", () => loadDocs(p, seed, tokens, tok))

        const model = yield* acquireModel(dir)
        if (tok.vocabSize > model.config.vocabSize) {
          return yield* fail(`tokenizer ${tok.name} has ${tok.vocabSize} ids but the model's vocab_size is ${model.config.vocabSize}`)
        }
        const spec = model.config.rope
        const L0 = p.originalLength ?? spec.originalMaxPositions ?? spec.maxPositions

        // every (method, length, protocol) with its table; tables are built once per (method, length)
        const requests: Array<{ method: Method; length: number; protocol: Protocol; table: ChosenTable; stride: number | undefined }> = []
        for (const method of p.methods) {
          for (const L of lengths) {
            const s = Math.max(1, L / L0)
            const scaling = methodScaling(method, s, L0)
            const table = yield* attempt(`RoPE ${method} at ${L}`, () =>
              scaling === "model" ? model.rope(L) : resolveRope({ ...spec, originalMaxPositions: L0, scaling }, `evaluate ${method}`)(L))
            for (const protocol of p.protocols) {
              const stride = protocol === "sliding" ? p.stride ?? Math.min(256, L - 1) : undefined
              // stride > window is LongRoPE's Books3 protocol (§5.1: windows at 0, stride, 2·stride, each
              // tokens[begin : begin+L−1]): every window is scored whole and the text between them is skipped
              requests.push({ method, length: L, protocol, table, stride })
            }
          }
        }
        const skipShort = p.minTokens !== undefined && p.data.source === "corpus"
        const { passes, measurements } = planPasses(requests, docs, bos, skipShort)
        for (const m of measurements) {
          if (m.windows.length === 0) {
            if (m.skipped === docs.length) return yield* fail(`${m.protocol} at length ${m.length}: all ${docs.length} documents are shorter than the window (minTokens ${p.minTokens}); raise minTokens or drop the length`)
            return yield* fail(`${m.protocol} at length ${m.length}: no window fits the ${tokens}-token documents (chunked needs documents of ≥ L tokens; raise \`tokens\`)`)
          }
          if (m.skipped > 0 && m.method === p.methods[0] && m.protocol === p.protocols[0]) {
            yield* ctx.progress.log(`length ${m.length}: ${m.skipped} of ${docs.length} documents shorter than the window, skipped`)
          }
          if (m.stride !== undefined && m.stride > m.length - (bos ? 1 : 0) && m.method === p.methods[0]) {
            yield* ctx.progress.log(`length ${m.length}: stride ${m.stride} > window, so windows start every ${m.stride} tokens and the text between them is not scored`)
          }
        }
        yield* ctx.progress.log(
          `${requests.length} measurements on ${docs.length} documents from ${passes.length} forward passes (${data}); L0 ${L0}`,
        )

        // the passes, one at a time; each is saved so a re-run resumes after the last one finished
        const logprobs: Float64Array[] = []
        for (const [i, pass] of passes.entries()) {
          const doc = docs[pass.doc]!
          const file = join(ctx.checkpointDir, `pass-${createHash("sha256").update(`${pass.key}:${doc.id}:${pass.to}:${p.chunk ?? 0}`).digest("hex").slice(0, 24)}.json`)
          let lp: Float64Array
          if (existsSync(file)) lp = Float64Array.from(JSON.parse(readFileSync(file, "utf8")) as number[])
          else {
            const input = Uint32Array.from(bos ? [tok.bos!, ...doc.ids.slice(pass.from, pass.to)] : doc.ids.slice(pass.from, pass.to))
            const options = { rope: pass.table, ...(p.chunk === undefined ? {} : { chunk: p.chunk }) }
            // the pass and its checkpoint together: an interrupt lands before or after both, never between
            lp = yield* Effect.uninterruptible(
              Effect.tryPromise({ try: () => model.logprobs(input, options), catch: (e) => fail(`forward pass ${pass.label} on ${doc.id}: ${errText(e)}`, e) }).pipe(
                Effect.tap((v) => attempt("checkpoint", () => writeJsonAtomic(file, Array.from(v)))),
              ),
            )
          }
          logprobs.push(lp)
          yield* ctx.progress.report((i + 1) / passes.length, `pass ${i + 1}/${passes.length} (${pass.label})`)
        }

        const perplexity: PerplexityEntry[] = []
        for (const m of measurements) {
          const nll = m.windows.map((w) => windowNll(w.window, logprobs[w.pass]!, bos))
          const value = aggregate(m.protocol, nll)
          if (!Number.isFinite(value)) {
            return yield* fail(`${m.method} at ${m.length} (${m.protocol}): perplexity is ${value} (the forward pass gave non-finite log-probs)`)
          }
          perplexity.push({
            method: m.method,
            model: p.label,
            length: m.length,
            value,
            protocol: m.protocol,
            samples: [...new Set(m.windows.map((w) => docs[w.doc]!.id))],
            bos: BOS_NOTE[m.protocol](bos),
            aggregation: AGGREGATION[m.protocol],
            ...(m.stride === undefined ? {} : { stride: m.stride }),
            ...(skipShort ? { skipped: m.skipped } : {}),
            windows: nll.length,
            tokens: nll.reduce((a, w) => a + w.count, 0),
            scale: m.length / L0,
            rope: `${m.table.method}: ${m.table.reason}`,
            data,
          })
          yield* ctx.progress.log(`${m.method.padEnd(5)} L=${String(m.length).padStart(6)} ${m.protocol.padEnd(8)} ppl ${value.toFixed(3)}`)
        }

        /** A method's table at scale max(1, L/L0), resolved for a sequence of `n` tokens. */
        const tableAt = (method: Method, L: number, n: number): Effect.Effect<ChosenTable, StageError> => {
          const scaling = methodScaling(method, Math.max(1, L / L0), L0)
          return attempt(`RoPE ${method} at ${L}`, () => (scaling === "model" ? model.rope(n) : resolveRope({ ...spec, originalMaxPositions: L0, scaling }, `evaluate ${method}`)(n)))
        }
        /** A result kept in the checkpoint folder: computed once, re-read after an interrupt. */
        const saved = <A>(name: string, compute: () => Promise<A>, what: string): Effect.Effect<A, StageError> => {
          const file = join(ctx.checkpointDir, `${name}.json`)
          if (existsSync(file)) return attempt("checkpoint", () => JSON.parse(readFileSync(file, "utf8")) as A)
          return Effect.uninterruptible(
            Effect.tryPromise({ try: compute, catch: (e) => fail(`${what}: ${errText(e)}`, e) }).pipe(Effect.tap((v) => attempt("checkpoint", () => writeJsonAtomic(file, v)))),
          )
        }

        // ---- LongRoPE2 needle-driven perplexity: NLL of the answer tokens only ----
        if (p.needle !== undefined) {
          const nd = p.needle
          const nSeed = nd.seed ?? seed
          const nLengths = [...new Set(nd.lengths ?? lengths)].sort((a, b) => a - b)
          const chunkOpt = p.chunk === undefined ? {} : { chunk: p.chunk }
          for (const L of nLengths) {
            const samples = yield* attempt(`needle samples at ${L}`, () =>
              docs.flatMap((d, di) =>
                needleDepths(di, nd.depths).map((depth, j) => ({
                  key: `${di}:${j}`,
                  id: `${d.id}@needle(depth=${depth.toFixed(4)})`,
                  sample: needleSample({ tokenizer: tok, document: d.ids, seqLen: L, rng: Rng.seeded(nSeed, NEEDLE_STREAM, L, di, j), depth }),
                })),
              ))
            for (const method of p.methods) {
              const table = yield* tableAt(method, L, L)
              const tk = tableKey(table)
              const nll: Array<{ sum: number; count: number }> = []
              for (const [i, x] of samples.entries()) {
                const { start, end } = x.sample.answerSpan
                const r = yield* saved(
                  `needle-${sha(`${tk}:${L}:${x.key}:${nSeed}:${p.chunk ?? 0}`)}`,
                  async () => {
                    const lp = await model.logprobs(Uint32Array.from(x.sample.ids), { rope: table, ...chunkOpt })
                    let sum = 0
                    for (let t = start; t < end; t++) sum -= lp[t - 1]!
                    return { sum, count: end - start }
                  },
                  `needle pass ${method}@${L} on ${x.id}`,
                )
                nll.push(r)
                yield* ctx.progress.report((i + 1) / samples.length, `needle ${method}@${L} ${i + 1}/${samples.length}`)
              }
              const value = aggregate("truncate", nll)
              if (!Number.isFinite(value)) return yield* fail(`needle ${method} at ${L}: perplexity is ${value}`)
              perplexity.push({
                method,
                model: p.label,
                length: L,
                value,
                protocol: "needle",
                samples: samples.map((x) => x.id),
                bos: bos ? "BOS, instruction, document with the needle sentence at the depth, question, answer (LongRoPE2 §5.4)" : "no BOS (tokenizer has none); instruction, document with the needle, question, answer",
                aggregation: "exp(mean over samples of the answer tokens' mean NLL); only the 7-digit answer is scored",
                windows: nll.length,
                tokens: nll.reduce((a, w) => a + w.count, 0),
                scale: L / L0,
                rope: `${table.method}: ${table.reason}`,
                data: `${data}; needles: seed ${nSeed}, depths ${nd.depths === undefined ? "(i + 10j)/99 for document i, j = 0..9" : nd.depths.join(", ")}`,
              })
              yield* ctx.progress.log(`${method.padEnd(5)} L=${String(L).padStart(6)} needle   ppl ${value.toFixed(3)}`)
            }
          }
        }

        // ---- passkey retrieval (§5.2): greedy generation, answer = first integer ----
        const passkey: PasskeyEntry[] = []
        if (p.passkey !== undefined) {
          const pk = p.passkey
          const gen = generator(model)
          if (gen === undefined) return yield* fail("passkey: the model has no incremental decoding (session) to generate with")
          const pkSeed = pk.seed ?? seed
          const pkLengths = [...new Set(pk.lengths)].sort((a, b) => a - b)
          const depths: ReadonlyArray<number | undefined> = pk.depths ?? [undefined]
          const stop = tok.eos === undefined ? [] : [tok.eos]
          const text = (ids: readonly number[]): string => tok.decode(ids.filter((t) => t < tok.vocabSize && t !== tok.bos && t !== tok.eos))
          // generations already made, by (table or table sequence, prompt): equal tables give equal tokens
          const memo = new Map<string, number[]>()
          const total = p.methods.length * pkLengths.length * depths.length * pk.trials
          let done = 0
          for (const L of pkLengths) {
            for (const depth of depths) {
              const prompts = yield* attempt(`passkey prompts at ${L}`, () => Array.from({ length: pk.trials }, (_, t) => passkeyTrialPrompt(tok, pkSeed, L, t, depth)))
              for (const method of p.methods) {
                const keys: number[] = []
                const answers: Array<number | null> = []
                let correct = 0
                let rope = ""
                const policy = method === "model" ? "reprefill" : "fixed"
                for (const [t, prompt] of prompts.entries()) {
                  const n = prompt.ids.length + pk.maxNew
                  // baselines: one table, the method's at this length's scale, resolved for prompt + maxNew.
                  // model: its own method per sequence length, re-prefilling when the table changes (what
                  // HF's cache-less generation in the paper's script computes).
                  let opts: Parameters<typeof generate>[2]
                  let genKey: string
                  if (method === "model") {
                    const seen = new Set<string>()
                    for (let k = prompt.ids.length; k <= n; k++) seen.add(tableKey(model.rope(k)))
                    genKey = seen.size === 1 ? [...seen][0]! : `model:${[...seen].join(",")}`
                    opts = { maxNew: pk.maxNew, policy: "reprefill", stop, ...(p.chunk === undefined ? {} : { chunk: p.chunk }) }
                    const first = model.rope(prompt.ids.length)
                    if (t === 0) rope = `the model's own, by sequence length (at ${prompt.ids.length}: ${first.method}: ${first.reason})`
                  } else {
                    const table = yield* tableAt(method, L, n)
                    genKey = tableKey(table)
                    opts = { maxNew: pk.maxNew, policy: "fixed", stop, rope: () => table, ...(p.chunk === undefined ? {} : { chunk: p.chunk }) }
                    if (t === 0) rope = `${table.method}: ${table.reason}`
                  }
                  const id = `${genKey}:${L}:${depth ?? "random"}:${t}`
                  let tokens = memo.get(id)
                  if (tokens === undefined) {
                    const o = opts
                    tokens = yield* saved(
                      `passkey-${sha(`${id}:${pkSeed}:${pk.maxNew}:${tok.name}`)}`,
                      async () => (await generate(gen, prompt.ids, o)).tokens,
                      `passkey generation ${method}@${L} trial ${t}`,
                    )
                    memo.set(id, tokens)
                  }
                  const answer = firstInteger(text(tokens))
                  keys.push(prompt.key)
                  answers.push(answer ?? null)
                  if (answer === prompt.key) correct++
                  yield* ctx.progress.report(++done / total, `passkey ${method}@${L} trial ${t + 1}/${pk.trials}`)
                }
                passkey.push({
                  method,
                  model: p.label,
                  length: L,
                  accuracy: correct / pk.trials,
                  trials: pk.trials,
                  ...(depth === undefined ? {} : { depth }),
                  correct,
                  seed: pkSeed,
                  prompts: PASSKEY_PROMPTS + (depth === undefined ? ", depth uniformly random" : `, depth ${depth}`),
                  promptTokens: prompts.map((x) => x.ids.length),
                  keys,
                  answers,
                  maxNew: pk.maxNew,
                  policy,
                  scale: L / L0,
                  rope,
                })
                yield* ctx.progress.log(`${method.padEnd(5)} L=${String(L).padStart(6)} passkey${depth === undefined ? "" : ` depth ${depth}`} ${correct}/${pk.trials}`)
              }
            }
          }
        }

        // ---- short-context fidelity: perplexity at L0 and KL(base ‖ method) at every position ----
        const short: ShortEntry[] = []
        if (p.short !== undefined) {
          const Ls = p.short.length ?? L0
          const scale = p.short.scale ?? Math.max(1, longest / L0)
          const dist = model.distributions?.bind(model)
          if (dist === undefined) return yield* fail("short: the model gives no full distributions")
          if (tokens < Ls - (bos ? 1 : 0)) return yield* fail(`short: documents of ${tokens} tokens are shorter than a ${Ls}-token window (raise \`tokens\`)`)
          const base = yield* attempt("RoPE base", () => resolveRope({ ...spec, scaling: undefined }, "evaluate base")(Ls))
          // every method's table at the extension's scale, on the short input; equal tables run once
          const unique: ChosenTable[] = [base]
          const keyIndex = new Map([[tableKey(base), 0]])
          const at: number[] = []
          for (const method of p.methods) {
            const scaling = methodScaling(method, scale, L0)
            const table = yield* attempt(`RoPE ${method} at scale ${scale}`, () =>
              scaling === "model" ? model.rope(Ls) : resolveRope({ ...spec, originalMaxPositions: L0, scaling }, `evaluate ${method}`)(Ls))
            const k = tableKey(table)
            if (!keyIndex.has(k)) (keyIndex.set(k, unique.length), unique.push(table))
            at.push(keyIndex.get(k)!)
          }
          const V = model.config.vocabSize
          const perDoc: Array<{ nll: number[]; kl: number[]; positions: number }> = []
          for (const [di, d] of docs.entries()) {
            const input = Uint32Array.from(bos ? [tok.bos!, ...d.ids.slice(0, Ls - 1)] : d.ids.slice(0, Ls))
            const r = yield* saved(
              `short-${sha(`${[...keyIndex.keys()].join(",")}:${Ls}:${d.id}:${p.chunk ?? 0}`)}`,
              async () => {
                const nll = unique.map(() => 0)
                const kl = unique.map(() => 0)
                await dist(input, unique, (from, count, rows) => {
                  const b = rows[0]!
                  for (let j = 0; j < count; j++) {
                    const target = input[from + j + 1]!
                    for (let k = 0; k < rows.length; k++) {
                      nll[k]! -= rows[k]![j * V + target]!
                      if (k > 0) kl[k]! += klRow(b, rows[k]!, j * V, V)
                    }
                  }
                }, p.chunk === undefined ? {} : { chunk: p.chunk })
                return { nll, kl, positions: input.length - 1 }
              },
              `short-context pass on ${d.id}`,
            )
            perDoc.push(r)
            yield* ctx.progress.report((di + 1) / docs.length, `short context ${di + 1}/${docs.length}`)
          }
          for (const [mi, method] of p.methods.entries()) {
            const k = at[mi]!
            const table = unique[k]!
            const value = aggregate("truncate", perDoc.map((r) => ({ sum: r.nll[k]!, count: r.positions })))
            const kl = perDoc.reduce((a, r) => a + r.kl[k]! / r.positions, 0) / perDoc.length
            if (!Number.isFinite(value) || !Number.isFinite(kl)) return yield* fail(`short ${method}: perplexity ${value}, KL ${kl} (non-finite log-probs)`)
            short.push({
              method,
              model: p.label,
              length: Ls,
              perplexity: value,
              kl,
              baseline: "none",
              samples: docs.map((d) => d.id),
              divergence: "KL(base ‖ method) in nats per token, base = this checkpoint under plain RoPE; mean over positions, then over samples",
              aggregation: AGGREGATION.truncate,
              bos: BOS_NOTE.truncate(bos),
              positions: perDoc.reduce((a, r) => a + r.positions, 0),
              scale,
              rope: `${table.method}: ${table.reason}`,
              data,
            })
            yield* ctx.progress.log(`${method.padEnd(5)} L=${String(Ls).padStart(6)} short    ppl ${value.toFixed(3)} KL ${kl.toExponential(3)}`)
          }
        }

        yield* attempt("metrics.json", () => writeMetrics(ctx.outputs.metrics, { ...emptyMetrics(), perplexity, passkey, short }))
        return {
          passes: passes.length,
          perplexity: perplexity.map((e) => ({ method: e.method, length: e.length, protocol: e.protocol, value: e.value })),
          passkey: passkey.map((e) => ({ method: e.method, length: e.length, ...(e.depth === undefined ? {} : { depth: e.depth }), accuracy: e.accuracy })),
          short: short.map((e) => ({ method: e.method, length: e.length, perplexity: e.perplexity, kl: e.kl })),
        }
      }),
    ),
})
