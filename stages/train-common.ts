/**
 * What `pretrain` and `finetune` share: the params every training stage takes (data, optimizer,
 * schedule, batch, checkpoints), turning them into a document source, an optimizer config and a
 * schedule, the RoPE coverage check, and the training run itself as an Effect:
 *
 *   device (the Gpu service, or one acquired for the step) → trainable model → AdamW → resume from the
 *   newest training checkpoint in ctx.checkpointDir (or `resumeFrom`) → one update at a time
 *   (uninterruptible: a GPU step cannot be abandoned half-way; interruption lands between updates) →
 *   the stage's own output writer.
 *
 * Sequences. Documents are packed (plugins/data Packer, BOS/EOS around each) into seqLen + 1 tokens:
 * inputs are the first seqLen, targets the last seqLen. Two layouts:
 * - continuous (LongRoPE's recipe): positions 0..seqLen−1 across document boundaries, plain causal
 *   attention, one RoPE table, the one for seqLen; every target scored.
 * - mixed context window (LongRoPE2): positions restart at every document, attention stays inside a
 *   document, and each document uses the factor set for its own length in the sequence, i.e. its largest
 *   position + 1 as in nnScaler's LongRoPE2 code (the table the model's RoPE method picks for that length:
 *   short set ≤ original context, long set beyond). lossAndGrad takes one
 *   table per call, so a sequence's documents are grouped by table and each group is one call (its
 *   documents concatenated, kept apart by segment ids); the groups' gradients are weighted by their share
 *   of scored targets, so the update equals one pass over the sequence. A target that is the first token
 *   of the next document is not scored (its document is not visible to the query).
 *
 * Exact resume: the checkpoint holds weights, AdamW moments and step (training/checkpoint.ts), the loop
 * position, and the data cursor. Nothing else is random during training (the data order is a seeded
 * permutation per epoch, a synthetic document is a function of (seed, index)), so a resumed run
 * reproduces the uninterrupted one bit for bit on the same machine.
 */
import { Effect, Option, Schema } from "effect"
import { copyFileSync, existsSync, mkdirSync, statSync } from "node:fs"
import { join, resolve } from "node:path"
import { acquireRuntime, Gpu, GpuUnavailable } from "../kernels/device.ts"
import type { RopeTable } from "../kernels/rope-table.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { InputError, inputError } from "../pipeline/errors.ts"
import type { Json, StageContext } from "../pipeline/workflow/stage.ts"
import { StageError } from "../pipeline/workflow/stage.ts"
import { writeFileAtomic } from "../pipeline/workflow/store.ts"
import { openCorpus } from "../plugins/data/corpus.ts"
import { type DataCursor, type DocumentSource, Packer, tokenizedCorpus } from "../plugins/data/pack.ts"
import { KEY_DRAWS, type KeyDraw, SYNTHETIC_TASKS, type SyntheticTask, syntheticDocument, syntheticSource, taskWeight } from "../plugins/data/synthetic.ts"
import { Rng } from "../plugins/data/rng.ts"
import type { TextTokenizer } from "../plugins/data/tokenizer.ts"
import type { LlamaConfig } from "../plugins/models/llama/config.ts"
import { createTrainableLlama, type HostWeights, type TrainableLlama } from "../plugins/models/llama/train.ts"
import { writeCheckpoint } from "../plugins/models/safetensors.ts"
import type { RopeSpec } from "../plugins/rope/types.ts"
import { latestTrainingCheckpoint, restoreNewestTraining, restoreTraining } from "../training/checkpoint.ts"
import { loopPosition, trainLoop } from "../training/loop.ts"
import { Optimizer, type OptimizerConfig } from "../training/optimizer.ts"
import { type ScheduleConfig, type ScheduleKind, validateSchedule } from "../training/schedule.ts"

// ---- params ------------------------------------------------------------------------------------

export const PosInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
export const NonNegInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
export const NonNeg = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))
export const Obj = Schema.Record(Schema.String, Schema.Unknown)

/** The params both training stages take. Defaults differ per stage (see each stage's `defaults`). */
export const TRAIN_FIELDS = {
  /** Tokens per training sequence (model inputs; targets are the same shifted by one). */
  seqLen: Schema.optionalKey(PosInt),
  /** Optimizer updates. */
  steps: PosInt,
  /** Sequences per update, by gradient accumulation (one sequence per forward/backward). */
  batch: Schema.optionalKey(PosInt),
  /** Peak learning rate. */
  lr: Schema.optionalKey(NonNeg),
  schedule: Schema.optionalKey(Schema.Literals(["constant", "linear", "cosine"])),
  /** Linear warmup updates (from 0). */
  warmup: Schema.optionalKey(NonNegInt),
  /** Where linear/cosine decay ends. */
  minLr: Schema.optionalKey(NonNeg),
  weightDecay: Schema.optionalKey(NonNeg),
  beta1: Schema.optionalKey(NonNeg),
  beta2: Schema.optionalKey(NonNeg),
  eps: Schema.optionalKey(NonNeg),
  /** Global gradient-norm clip; 0 = none. */
  clip: Schema.optionalKey(NonNeg),
  /**
   * `{source: "synthetic", seed?, tasks?, docLength?, documents?, filler?}` (default) or
   * `{source: "corpus", path, field?}`; see `resolveTrainData`.
   */
  data: Schema.optionalKey(Obj),
  /** "byte" or a folder with tokenizer.json. */
  tokenizer: Schema.optionalKey(Schema.NonEmptyString),
  /** LongRoPE2's mixed context window (positions restart per document, per-document factor set). */
  mixedContext: Schema.optionalKey(Schema.Boolean),
  /**
   * PoSE position skipping: each document (the whole sequence when not mixed) is cut into `chunks`
   * pieces and later pieces' positions jump ahead, so positions reach up to `length` while the sequence
   * stays seqLen tokens long. See `skipPositions`.
   */
  positionSkip: Schema.optionalKey(Schema.Struct({ length: PosInt, chunks: Schema.optionalKey(PosInt) })),
  /** Save a training checkpoint every this many updates (and after the last). */
  checkpointEvery: Schema.optionalKey(PosInt),
  /** Training checkpoints kept (newest). */
  keepCheckpoints: Schema.optionalKey(PosInt),
  /** Continue from this training checkpoint (a step-N folder, or a folder of them) when the step has none. */
  resumeFrom: Schema.optionalKey(Schema.NonEmptyString),
} as const

export interface TrainParams {
  readonly seqLen?: number
  readonly steps: number
  readonly batch?: number
  readonly lr?: number
  readonly schedule?: ScheduleKind
  readonly warmup?: number
  readonly minLr?: number
  readonly weightDecay?: number
  readonly beta1?: number
  readonly beta2?: number
  readonly eps?: number
  readonly clip?: number
  readonly data?: { readonly [k: string]: unknown }
  readonly tokenizer?: string
  readonly mixedContext?: boolean
  readonly positionSkip?: PositionSkip
  readonly checkpointEvery?: number
  readonly keepCheckpoints?: number
  readonly resumeFrom?: string
}

/** The checkpoint policy both training stages derive from their params (every ~10% of the run, keep 2). */
export const checkpointing = (p: TrainParams): { checkpointEvery: number; keep: number; resumeFrom: string | undefined } => ({
  checkpointEvery: p.checkpointEvery ?? Math.max(1, Math.ceil(p.steps / 10)),
  keep: p.keepCheckpoints ?? 2,
  resumeFrom: p.resumeFrom,
})

/** A stage's defaults for the optional hyper-parameters. */
export interface TrainDefaults {
  readonly lr: number
  readonly schedule: ScheduleKind
  /** Warmup when not given: min(this, ⌊steps/10⌋), so short runs still reach the peak rate. */
  readonly warmup: number
  readonly weightDecay: number
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  readonly clip: number
  readonly mixedContext: boolean
}

export const fail = (message: string, cause?: unknown): StageError => new StageError({ message, cause })

/** InputErrors carry their own `file: problem` message; anything else gets the context prefixed. */
export const asStageError = (e: unknown, what: string): StageError =>
  e instanceof StageError ? e : e instanceof InputError ? fail(e.message, e) : fail(`${what}: ${e instanceof Error ? e.message : String(e)}`, e)

/** The optimizer and schedule from params and defaults; errors name the param. */
export function optimizerAndSchedule(stage: string, p: TrainParams, d: TrainDefaults): { optimizer: OptimizerConfig; schedule: ScheduleConfig } {
  const beta1 = p.beta1 ?? d.beta1
  const beta2 = p.beta2 ?? d.beta2
  if (!(beta1 < 1)) throw inputError(`${stage}.beta1`, `expected a number in [0, 1), got ${beta1}`)
  if (!(beta2 < 1)) throw inputError(`${stage}.beta2`, `expected a number in [0, 1), got ${beta2}`)
  const eps = p.eps ?? d.eps
  if (!(eps > 0)) throw inputError(`${stage}.eps`, `expected a number > 0, got ${eps}`)
  const clip = p.clip ?? d.clip
  const optimizer: OptimizerConfig = {
    beta1, beta2, eps, weightDecay: p.weightDecay ?? d.weightDecay,
    ...(clip > 0 ? { maxGradNorm: clip } : {}),
  }
  const lr = p.lr ?? d.lr
  const kind = p.schedule ?? d.schedule
  const warmup = p.warmup ?? Math.min(d.warmup, Math.floor(p.steps / 10))
  if (warmup > p.steps) throw inputError(`${stage}.warmup`, `${warmup} exceeds steps (${p.steps})`)
  if (p.minLr !== undefined && p.minLr > lr) throw inputError(`${stage}.minLr`, `must not exceed lr (${lr}), got ${p.minLr}`)
  const schedule: ScheduleConfig = { kind, lr, warmupSteps: warmup, totalSteps: p.steps, ...(p.minLr === undefined ? {} : { minLr: p.minLr }) }
  try {
    validateSchedule(schedule)
  } catch (e) {
    throw inputError(stage, (e as Error).message)
  }
  return { optimizer, schedule }
}

// ---- data --------------------------------------------------------------------------------------

const SYNTHETIC_KEYS = ["tasks", "docLength", "documents", "filler", "kvPairs", "kvQueries", "copies", "keys", "answerWeight"]
const DATA_KEYS = ["source", "path", "field", "seed", ...SYNTHETIC_KEYS]

export interface TrainData {
  readonly source: DocumentSource
  /** Seed of the packer's per-epoch shuffle. */
  readonly seed: number
  /** For logs and the manifest. */
  readonly describe: string
  /** Loss weight of answer tokens (synthetic documents); undefined: every token weighs 1. */
  readonly answerWeight?: number
}

/**
 * The training documents.
 * - synthetic (default): plugins/data's generator with the tokenizer. `tasks` weights (default: all four),
 *   `docLength` tokens per document, a number or [min, max] (default seqLen − 1: with BOS and EOS a document
 *   is exactly one packed sequence of seqLen + 1), `documents` in the pool (default 100000; made on demand), `filler` "varied" | "paper" | "mixed",
 *   `kvPairs` / `kvQueries` per key-value document (default 4 / 1), `copies` passkey lines per `copy` drill
 *   document (default 4), `keys` "uniform" (1..50000, default) | "digits" (see SyntheticOptions.keys), `answerWeight` (loss weight of the answer
 *   tokens, default 1: retrieval is a few tokens per document, and weighting them is what taught the tiny
 *   model to copy; see workflows/tiny-pretrain.yaml).
 * - corpus: `path` (a folder of .txt/.jsonl or one such file), JSONL `field` (default "text").
 * `seed` (default the step's) seeds the synthetic documents and the shuffle.
 */
export function resolveTrainData(stage: string, raw: { readonly [k: string]: unknown } | undefined, tokenizer: TextTokenizer, seqLen: number, stepSeed: number): TrainData {
  const o = raw ?? {}
  const where = (k: string) => `${stage}.data.${k}`
  for (const k of Object.keys(o)) if (!DATA_KEYS.includes(k)) throw inputError(where(k), `unknown field; known: ${DATA_KEYS.join(", ")}`)
  const seed = o["seed"] ?? stepSeed
  if (typeof seed !== "number" || !Number.isSafeInteger(seed)) throw inputError(where("seed"), `expected an integer, got ${JSON.stringify(seed)}`)
  const src = o["source"] ?? "synthetic"
  if (src === "corpus") {
    for (const k of SYNTHETIC_KEYS) if (o[k] !== undefined) throw inputError(where(k), 'applies to source "synthetic" only')
    const path = o["path"]
    const field = o["field"]
    if (typeof path !== "string" || path === "") throw inputError(where("path"), `expected the corpus path (a folder of .txt/.jsonl or one such file), got ${JSON.stringify(path)}`)
    if (field !== undefined && (typeof field !== "string" || field === "")) throw inputError(where("field"), `expected a field name, got ${JSON.stringify(field)}`)
    const corpus = openCorpus(resolve(path), field === undefined ? {} : { field })
    return { source: tokenizedCorpus(corpus, tokenizer), seed, describe: `corpus ${corpus.path} (${corpus.size} documents, tokenizer ${tokenizer.name})` }
  }
  if (src !== "synthetic") throw inputError(where("source"), `expected "synthetic" or "corpus", got ${JSON.stringify(src)}`)
  if (o["path"] !== undefined || o["field"] !== undefined) throw inputError(where(o["path"] !== undefined ? "path" : "field"), 'applies to source "corpus" only')
  const tasks = o["tasks"]
  if (tasks !== undefined) {
    if (typeof tasks !== "object" || tasks === null || Array.isArray(tasks)) throw inputError(where("tasks"), `expected {${SYNTHETIC_TASKS.map((t) => `${t}?`).join(", ")}} weights, got ${JSON.stringify(tasks)}`)
    for (const [k, v] of Object.entries(tasks)) {
      if (!(SYNTHETIC_TASKS as readonly string[]).includes(k)) throw inputError(where(`tasks.${k}`), `unknown task; known: ${SYNTHETIC_TASKS.join(", ")}`)
      if (typeof v !== "number" || !(v >= 0)) throw inputError(where(`tasks.${k}`), `expected a weight ≥ 0, got ${JSON.stringify(v)}`)
    }
  }
  const dl = o["docLength"] ?? Math.max(1, seqLen - 1)
  const okLen = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 1
  let length: number | readonly [number, number]
  if (okLen(dl)) length = dl
  else if (Array.isArray(dl) && dl.length === 2 && okLen(dl[0]) && okLen(dl[1]) && dl[0] <= dl[1]) length = [dl[0], dl[1]]
  else throw inputError(where("docLength"), `expected tokens per document, an integer ≥ 1 or [min, max], got ${JSON.stringify(dl)}`)
  const documents = o["documents"] ?? 100_000
  if (!okLen(documents)) throw inputError(where("documents"), `expected an integer ≥ 1, got ${JSON.stringify(documents)}`)
  const filler = o["filler"]
  if (filler !== undefined && filler !== "varied" && filler !== "paper" && filler !== "mixed") throw inputError(where("filler"), `expected "varied", "paper" or "mixed", got ${JSON.stringify(filler)}`)
  const keys = o["keys"]
  if (keys !== undefined && !KEY_DRAWS.includes(keys as KeyDraw)) throw inputError(where("keys"), `expected "uniform" (1..50000, §5.2) or "digits" (digit count uniform in 1..5), got ${JSON.stringify(keys)}`)
  const kv: { kvPairs?: number; kvQueries?: number; copies?: number } = {}
  for (const k of ["kvPairs", "kvQueries", "copies"] as const) {
    const v = o[k]
    if (v === undefined) continue
    if (!okLen(v)) throw inputError(where(k), `expected an integer ≥ 1, got ${JSON.stringify(v)}`)
    kv[k] = v
  }
  const opts = {
    tokenizer, seed, length, ...kv,
    ...(tasks === undefined ? {} : { tasks: tasks as Partial<Record<SyntheticTask, number>> }),
    ...(filler === undefined ? {} : { filler: filler as "varied" | "paper" | "mixed" }),
    ...(keys === undefined ? {} : { keys: keys as KeyDraw }),
  }
  const answerWeight = o["answerWeight"]
  if (answerWeight !== undefined && !(typeof answerWeight === "number" && Number.isFinite(answerWeight) && answerWeight > 0))
    throw inputError(where("answerWeight"), `expected a positive number, got ${JSON.stringify(answerWeight)}`)
  const source = syntheticSource(opts, documents)
  // Make each task's shortest document now: a task that does not fit the length fails here, naming the
  // param, instead of at whichever step first draws it.
  const shortest = typeof length === "number" ? length : length[0]
  for (const task of SYNTHETIC_TASKS) {
    if (!(taskWeight(task, opts.tasks) > 0)) continue
    try {
      syntheticDocument({ ...opts, length: shortest, tasks: { [task]: 1 } }, 0)
    } catch (e) {
      throw inputError(where("docLength"), `${(e as Error).message} (set data.docLength or data.tasks)`)
    }
  }
  return {
    source, seed,
    describe: `synthetic seed ${seed}, ${documents} documents of ${JSON.stringify(length)} tokens, tasks ${JSON.stringify(tasks ?? "all")}` +
      (answerWeight === undefined ? "" : `, answer tokens weigh ${answerWeight}`),
    ...(answerWeight === undefined ? {} : { answerWeight: answerWeight as number }),
  }
}

// ---- RoPE coverage -----------------------------------------------------------------------------

/**
 * The longest input a model's RoPE settings are meant for: max_position_embeddings for plain RoPE and
 * HF longrope; the last set's max_length for a factor-set table; L0 × factor (or max_position_embeddings
 * if larger) for the methods with a scale factor (linear, dynamic, yarn, llama3, ntk).
 */
export function ropeCoverage(spec: RopeSpec): { length: number; why: string } {
  const s = spec.scaling
  const type = s === undefined ? "default" : String(s["rope_type"] ?? s["type"] ?? "default")
  if (type === "default") return { length: spec.maxPositions, why: `max_position_embeddings ${spec.maxPositions}, plain RoPE (no rope_scaling)` }
  if (type === "longrope-research") {
    const sets = s?.["sets"]
    const last = Array.isArray(sets) ? (sets[sets.length - 1] as { max_length?: unknown } | undefined)?.max_length : undefined
    if (typeof last === "number") return { length: last, why: `the last factor set's max_length ${last}` }
  }
  if (type === "longrope" || type === "su") return { length: spec.maxPositions, why: `max_position_embeddings ${spec.maxPositions} (rope_type ${type})` }
  const factor = s?.["factor"]
  if (typeof factor === "number" && factor > 0) {
    const L0 = spec.originalMaxPositions ?? spec.maxPositions
    const n = Math.max(spec.maxPositions, Math.floor(L0 * factor))
    return { length: n, why: `rope_type ${type} with factor ${factor} over ${L0} positions` }
  }
  return { length: spec.maxPositions, why: `max_position_embeddings ${spec.maxPositions} (rope_type ${type})` }
}

/** Fails when `seqLen` is longer than the RoPE settings cover, naming the param. */
export function checkCoverage(stage: string, seqLen: number, spec: RopeSpec, fix: string): void {
  const c = ropeCoverage(spec)
  if (seqLen > c.length) throw inputError(`${stage}.seqLen`, `${seqLen} is longer than the RoPE table covers (${c.why}); ${fix}`)
}

// ---- sequences -----------------------------------------------------------------------------------

/** One lossAndGrad call: a group of documents (or the whole sequence) under one table. */
export interface Call {
  readonly inputs: Uint32Array
  readonly targets: Uint32Array
  readonly positions: Uint32Array | undefined
  readonly segments: Uint32Array | undefined
  /** Loss weight per target (0 = not scored); undefined: all 1. */
  readonly labelMask: Float32Array | undefined
  readonly rope: RopeTable
  /** Sum of this call's target weights (the scored targets when all weigh 1): its share of the sequence's loss. */
  readonly scored: number
}

/** A stable identity of a table's numbers, so documents whose lengths pick the same set share a call. */
const tableKeys = new WeakMap<RopeTable, string>()
const tableKey = (t: RopeTable): string => {
  let key = tableKeys.get(t)
  if (key === undefined) {
    const f = t.invFreq instanceof Float64Array ? [t.invFreq] : t.invFreq
    key = `${t.rotaryDim}|${t.startTokens}|${t.attentionScale}|${Array.from(t.originalInvFreq).join(",")}|${f.map((r) => Array.from(r).join(",")).join(";")}`
    tableKeys.set(t, key)
  }
  return key
}

export interface PositionSkip {
  /** The longest position + 1 a document may reach. */
  readonly length: number
  /** Pieces per document (default 2, as PoSE). */
  readonly chunks?: number
}

/** `positionSkip` checked against seqLen: its length must reach past the sequence. */
export function positionSkipOf(stage: string, p: TrainParams, seqLen: number): PositionSkip | undefined {
  const k = p.positionSkip
  if (k === undefined) return undefined
  if (k.length <= seqLen) throw inputError(`${stage}.positionSkip.length`, `expected more than seqLen (${seqLen}) positions, got ${k.length}`)
  if (k.chunks !== undefined && k.chunks < 2) throw inputError(`${stage}.positionSkip.chunks`, `expected at least 2 pieces per document, got ${k.chunks}`)
  return k
}

/** A stream of Rng.seeded reserved for position skips. */
const SKIP_STREAM = 0x505345

/**
 * PoSE (Zhu et al., 2024, "PoSE: Efficient Context Window Extension of LLMs via Positional Skip-wise
 * Training"; LongRoPE's own repo has 4k-PoSE runs): a document of n tokens is cut at `chunks − 1` random
 * points and piece j's positions are shifted by u_j, with 0 = u_0 ≤ u_1 ≤ … ≤ room = length − n drawn
 * uniformly. With 2 pieces its last position is uniform over [n − 1, length − 1], so relative distances and
 * query positions up to `length` are trained while each sequence costs seqLen tokens. The first piece
 * keeps position 0 (the BOS, which attention leans on). Fine-tuning without it trains the far end of
 * the window rarely (a position p is in a document only when the document is longer than p): measured on
 * the tiny model, the loss on the predictable passkey filler rises 10–100x in the last ~15% of the window.
 *
 * Positions are changed in place over the spans [from, to) of `spans`, each starting at position 0 or
 * at its own first position.
 */
export function skipPositions(positions: Int32Array, spans: ReadonlyArray<{ from: number; to: number }>, skip: PositionSkip, rng: Rng): void {
  const chunks = skip.chunks ?? 2
  for (const { from, to } of spans) {
    const n = to - from
    const room = skip.length - 1 - positions[to - 1]! // how far the last position may move
    if (n < 2 || room <= 0) continue
    const k = Math.min(chunks, n)
    const cuts = new Set<number>()
    while (cuts.size < k - 1) cuts.add(rng.int(1, n - 1))
    const at = [...cuts].sort((a, b) => a - b)
    const shifts = Array.from({ length: k - 1 }, () => rng.int(0, room)).sort((a, b) => a - b)
    for (let j = 0; j < at.length; j++) {
      const end = j + 1 < at.length ? at[j + 1]! : n
      for (let t = from + at[j]!; t < from + end; t++) positions[t] = positions[t]! + shifts[j]!
    }
  }
}

/**
 * Splits one packed sequence (seqLen + 1 tokens) into lossAndGrad calls. `tableFor(length)` is memoised
 * by the caller. Continuous: one call. Mixed: one call per distinct table among the documents.
 */
export function sequenceCalls(
  tokens: Int32Array, positions: Int32Array, docLengths: readonly number[], mixed: boolean, tableFor: (length: number) => RopeTable, weights?: Float32Array,
): Call[] {
  const T = tokens.length - 1
  const all = Uint32Array.from(tokens)
  // the weight of input t's target, token t + 1
  const wOf = (t: number): number => (weights === undefined ? 1 : weights[t + 1]!)
  if (!mixed) {
    const labelMask = weights === undefined ? undefined : weights.slice(1, T + 1)
    const scored = labelMask === undefined ? T : labelMask.reduce((a, x) => a + x, 0)
    const last = positions[T - 1]! + 1
    const pos = last === T ? undefined : Uint32Array.from(positions.subarray(0, T))
    return [{ inputs: all.subarray(0, T), targets: all.subarray(1), positions: pos, segments: undefined, labelMask, rope: tableFor(last), scored }]
  }
  const groups = new Map<string, { rope: RopeTable; spans: Span[] }>()
  for (const span of documentSpans(docLengths, T, true)) {
    // the set for the document's length: its largest position + 1 (more than its tokens when skipped)
    const rope = tableFor(positions[span.to - 1]! + 1)
    const key = tableKey(rope)
    let g = groups.get(key)
    if (g === undefined) groups.set(key, (g = { rope, spans: [] }))
    g.spans.push(span)
  }
  const calls: Call[] = []
  for (const g of groups.values()) {
    const n = g.spans.reduce((s, x) => s + x.to - x.from, 0)
    const inputs = new Uint32Array(n), targets = new Uint32Array(n), pos = new Uint32Array(n), seg = new Uint32Array(n), mask = new Float32Array(n)
    let k = 0, scored = 0
    g.spans.forEach((x, si) => {
      for (let t = x.from; t < x.to; t++, k++) {
        inputs[k] = all[t]!
        targets[k] = all[t + 1]!
        pos[k] = positions[t]!
        seg[k] = si
        // That cross-document target is not visible to the query (attention stays in the document): not scored.
        mask[k] = t === x.to - 1 && x.endsInside ? 0 : wOf(t)
        scored += mask[k]!
      }
    })
    if (scored > 0) calls.push({ inputs, targets, positions: pos, segments: seg, labelMask: mask, rope: g.rope, scored })
  }
  return calls
}

/** Inputs [from, to) of one document; endsInside: its last input predicts the next document's first token. */
export interface Span {
  readonly from: number
  readonly to: number
  readonly endsInside: boolean
}

/** The spans positions run over among the inputs [0, T): each packed document, the last one cut at T (mixed), or the whole sequence. */
export function documentSpans(docLengths: readonly number[], T: number, mixed: boolean): Span[] {
  if (!mixed) return [{ from: 0, to: T, endsInside: false }]
  const spans: Span[] = []
  let at = 0
  for (const len of docLengths) {
    const to = Math.min(at + len, T)
    if (to > at) spans.push({ from: at, to, endsInside: at + len <= T })
    at += len
  }
  return spans
}

// ---- the run -----------------------------------------------------------------------------------

export interface TrainingSetup {
  readonly stage: string
  readonly config: LlamaConfig
  /** Initial weights: a model folder or host tensors by HF name. */
  readonly weights: string | HostWeights
  /** The RoPE table for an input length (memoised here). */
  readonly tableFor: (length: number) => RopeTable
  readonly seqLen: number
  readonly mixed: boolean
  readonly positionSkip: PositionSkip | undefined
  readonly data: TrainData
  readonly tokenizer: TextTokenizer
  readonly optimizer: OptimizerConfig
  readonly schedule: ScheduleConfig
  readonly steps: number
  readonly batch: number
  readonly checkpointEvery: number
  readonly keep: number
  readonly resumeFrom: string | undefined
  /** Hyper-parameters, stored with every checkpoint. */
  readonly runConfig: Json
  /** Writes the stage's output (the HF folder) from the trained model. */
  readonly writeOutput: (model: TrainableLlama) => Promise<void>
}

export interface TrainingResult {
  readonly steps: number
  readonly resumedAt: number
  /** Mean loss of each update, from step 1 (carried across resumes). */
  readonly losses: readonly number[]
  readonly tokens: number
  readonly seconds: number
  readonly tokensPerSecond: number
}

/** What identifies interchangeable weights; a checkpoint with another one is refused. */
export const architectureOf = (c: LlamaConfig): Json => ({
  architecture: c.architecture, hidden: c.hiddenSize, intermediate: c.intermediateSize, layers: c.numLayers,
  heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, vocab: c.vocabSize, tied: c.tieWordEmbeddings,
  qkvBias: c.qkvBias, oBias: c.oBias, mlpBias: c.mlpBias,
})

/** The runtime: the run's shared Gpu when provided, else one acquired (and destroyed) for this step. */
export const gpuRuntime = Effect.gen(function* () {
  const shared = Option.getOrUndefined(yield* Effect.serviceOption(Gpu))
  if (shared !== undefined) return shared
  return yield* Effect.acquireRelease(
    Effect.tryPromise({ try: () => acquireRuntime(), catch: (e) => fail(e instanceof GpuUnavailable ? e.message : `no GPU: ${String(e)}`, e) }),
    (r) => Effect.sync(() => r.destroy()),
  )
})

/** `resumeFrom`: a step-N folder, or a folder holding them (its newest). */
function resumeDir(stage: string, path: string): string {
  const p = resolve(path)
  if (!existsSync(p) || !statSync(p).isDirectory()) throw inputError(`${stage}.resumeFrom`, `${p} is not a folder`)
  if (existsSync(join(p, "trainer_state.json"))) return p
  const latest = latestTrainingCheckpoint(p)
  if (latest === undefined) throw inputError(`${stage}.resumeFrom`, `${p} holds no training checkpoint (no step-N folder with trainer_state.json)`)
  return latest
}

interface DataMeta {
  readonly cursor: DataCursor
  readonly losses: readonly number[]
}

const finiteOrNull = (x: number): number | null => (Number.isFinite(x) ? x : null)

const isCursor = (v: unknown): v is DataCursor =>
  typeof v === "object" && v !== null && ["epoch", "doc", "offset"].every((k) => typeof (v as Record<string, unknown>)[k] === "number")

/** Trains as the setup says; returns the loss curve and speed. Needs a Scope (the model and device). */
export function runTraining(ctx: StageContext<unknown, string, string>, s: TrainingSetup) {
  return Effect.gen(function* () {
    const rt: GpuRuntime = yield* gpuRuntime
    const model = yield* Effect.acquireRelease(
      Effect.try({ try: () => createTrainableLlama(rt, s.config, s.weights), catch: (e) => asStageError(e, `${s.stage}: loading the weights`) }),
      (m) => Effect.sync(() => m.dispose()),
    )
    const optimizer = yield* Effect.acquireRelease(
      Effect.try({ try: () => new Optimizer(rt, model.params, s.optimizer), catch: (e) => asStageError(e, `${s.stage}: optimizer`) }),
      (o) => Effect.sync(() => o.dispose()),
    )
    const root = join(ctx.checkpointDir, "training")
    const architecture = architectureOf(s.config)

    // Resume: this step's own newest whole checkpoint (a damaged newer one is set aside), else `resumeFrom`.
    // A mismatch (another architecture) fails here, touching nothing on disk.
    const setAside: string[] = []
    const resumed = yield* Effect.try({
      try: () => {
        let ckpt = restoreNewestTraining(root, optimizer, architecture, (e, dir) => setAside.push(`${s.stage}: checkpoint ${dir} is damaged (${e.message}); set aside, resuming from the one before`))
        if (ckpt === undefined && s.resumeFrom !== undefined) ckpt = restoreTraining(resumeDir(s.stage, s.resumeFrom), optimizer, architecture)
        if (ckpt === undefined) return undefined
        const dir = ckpt.dir
        const data = ckpt.meta.data as unknown as Partial<DataMeta> | null
        if (data === null || !isCursor(data.cursor)) throw inputError(join(dir, "trainer_state.json"), "no data cursor (not written by a ropeway training stage)")
        const step = loopPosition(ckpt)
        if (step > s.steps) throw inputError(`${s.stage}.steps`, `${s.steps} is fewer than the ${step} updates of the checkpoint ${dir}`)
        return { dir, step, cursor: data.cursor, losses: Array.isArray(data.losses) ? data.losses.map((x) => (typeof x === "number" ? x : Number.NaN)) : [] }
      },
      catch: (e) => asStageError(e, `${s.stage}: resuming`),
    })
    for (const line of setAside) yield* ctx.progress.log(line)
    const start = resumed?.step ?? 0
    const losses: number[] = [...(resumed?.losses ?? [])].slice(0, start)
    if (resumed !== undefined) yield* ctx.progress.log(`${s.stage}: resuming at step ${start}/${s.steps} from ${resumed.dir}`)
    else yield* ctx.progress.log(`${s.stage}: ${s.steps} steps × ${s.batch} sequences of ${s.seqLen} tokens; data: ${s.data.describe}`)

    const packer = yield* Effect.try({
      try: () =>
        new Packer({
          source: s.data.source, seqLen: s.seqLen + 1, bos: s.tokenizer.bos, eos: s.tokenizer.eos, seed: s.data.seed,
          restartPositions: s.mixed, ...(resumed === undefined ? {} : { cursor: resumed.cursor }),
          ...(s.data.answerWeight === undefined ? {} : { answerWeight: s.data.answerWeight }),
        }),
      catch: (e) => asStageError(e, `${s.stage}: data`),
    })

    const memo = new Map<number, RopeTable>()
    const tableFor = (length: number): RopeTable => {
      let t = memo.get(length)
      if (t === undefined) memo.set(length, (t = s.tableFor(length)))
      return t
    }
    // The current update's mean loss, kept here so the checkpoint written after it can carry it.
    let stepLoss = 0
    const microStep = async ({ micro }: { readonly micro: number }): Promise<number> => {
      if (micro === 0) stepLoss = 0
      const weight = 1 / s.batch
      const at = s.positionSkip === undefined ? undefined : packer.cursor()
      const seq = packer.next()
      if (s.positionSkip !== undefined && at !== undefined) {
        // drawn from where the sequence starts in the data, so a resumed run skips the same way
        const rng = Rng.seeded(s.data.seed, SKIP_STREAM, at.epoch, at.doc, at.offset)
        skipPositions(seq.positions, documentSpans(seq.docLengths, s.seqLen, s.mixed), s.positionSkip, rng)
      }
      const calls = sequenceCalls(seq.tokens, seq.positions, seq.docLengths, s.mixed, tableFor, seq.weights)
      const total = calls.reduce((a, c) => a + c.scored, 0)
      let loss = 0
      for (const c of calls) {
        const r = await model.lossAndGrad(
          {
            inputs: c.inputs, targets: c.targets, rope: c.rope,
            ...(c.positions === undefined ? {} : { positions: c.positions }),
            ...(c.segments === undefined ? {} : { segments: c.segments }),
            ...(c.labelMask === undefined ? {} : { labelMask: c.labelMask }),
          },
          { grads: (n) => optimizer.grad(n), scale: (weight * c.scored) / total },
        )
        loss += (r.loss * c.scored) / total
      }
      stepLoss += loss / s.batch
      return loss
    }

    const t0 = performance.now()
    for (let step = start; step < s.steps; step++) {
      const save = (step + 1) % s.checkpointEvery === 0 || step + 1 === s.steps
      yield* Effect.tryPromise({
        try: () =>
          trainLoop({
            optimizer, schedule: s.schedule, startStep: step, totalSteps: step + 1, accumulation: s.batch, microStep,
            ...(save
              ? {
                  checkpoint: {
                    root, every: 1, keep: s.keep,
                    // rng: nothing random is drawn while training (see the header); the data cursor is the state.
                    meta: () => ({ data: { cursor: { ...packer.cursor() }, losses: [...losses, stepLoss].map(finiteOrNull) }, rng: null, config: s.runConfig, architecture }),
                  },
                }
              : {}),
            onStep: () => {
              losses.push(stepLoss)
            },
          }),
        catch: (e) => asStageError(e, `${s.stage}: step ${step + 1}`),
      }).pipe(Effect.uninterruptible)
      const done = step + 1
      const secs = (performance.now() - t0) / 1000
      const tokPerSec = ((done - start) * s.batch * s.seqLen) / secs
      const eta = ((s.steps - done) * secs) / (done - start)
      const loss = losses[losses.length - 1]!
      yield* ctx.progress.report(done / s.steps, `step ${done}/${s.steps}, loss ${loss.toFixed(4)}, ${Math.round(tokPerSec)} tok/s, ETA ${Math.round(eta)}s`)
    }
    const seconds = (performance.now() - t0) / 1000

    yield* Effect.tryPromise({ try: () => s.writeOutput(model), catch: (e) => asStageError(e, `${s.stage}: writing the model`) })
    const tokens = (s.steps - start) * s.batch * s.seqLen
    const result: TrainingResult = { steps: s.steps, resumedAt: start, losses, tokens, seconds, tokensPerSecond: seconds > 0 ? tokens / seconds : 0 }
    return result
  })
}

/** After a training stage: `ropeway_training.json` (run config + loss curve) beside the model, and a log line. */
export const finishTraining = (
  ctx: StageContext<unknown, string, string>,
  stage: string,
  record: Record<string, Json>,
  result: TrainingResult,
) =>
  Effect.gen(function* () {
    yield* Effect.try({
      try: () => writeFileAtomic(join(ctx.outputs.model!, "ropeway_training.json"), `${JSON.stringify({ ...record, losses: result.losses as number[] }, null, 1)}\n`),
      catch: (e) => asStageError(e, `${stage}: writing ropeway_training.json`),
    })
    yield* ctx.progress.log(`${stage}: done, loss ${fmtLoss(result.losses[0])} → ${fmtLoss(result.losses.at(-1))}, ${Math.round(result.tokensPerSecond)} tok/s`)
  })

export const fmtLoss = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(4))

/**
 * Writes a trained model as a Hugging Face folder: model.safetensors (with `note` in its metadata),
 * config.json, and whichever of `copy` exist in `from` (tokenizer files, generation config).
 */
export async function writeTrainedFolder(
  dir: string, model: TrainableLlama, note: string, configJson: unknown, from: string | undefined, copy: readonly string[],
): Promise<void> {
  mkdirSync(dir, { recursive: true })
  writeCheckpoint(dir, await model.hfTensors(), { metadata: { format: "pt", ropeway: note } })
  writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(configJson, null, 2)}\n`)
  if (from !== undefined) for (const f of copy) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(dir, f))
}

