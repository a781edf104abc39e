/**
 * `evaluate`: perplexity by length of a model under RoPE settings (its own, the PI / NTK / YaRN /
 * plain-RoPE baselines at the same scale, or PI / YaRN on top of its own longest set) by the protocols
 * truncate, sliding and chunked (plugins/eval/protocols.ts); optionally passkey retrieval (passkey.ts),
 * RULER-shaped retrieval tasks at depths × lengths (retrieval-run.ts), multiple-choice tasks at L0
 * (tasks.ts), LongRoPE2's needle-driven perplexity (needle.ts) and short-context fidelity (short.ts), all
 * on the same model and documents. Every forward pass, generation and scored item is checkpointed, so an
 * interrupted evaluation resumes where it stopped. Writes metrics.json with the protocol, sample ids and
 * BOS handling beside every value, and every value's interval and sample count (`intervals`).
 */
import { Effect, Schema } from "effect"
import { TokenizerMismatch } from "../common/errors.ts"
import { doc, PosInt, withDefault } from "../common/schema.ts"
import { defineStage, type StageContext } from "../pipeline/workflow/stage.ts"
import type { EvalContext } from "../plugins/eval/context.ts"
import { evaluationDocuments } from "../plugins/eval/documents.ts"
import { emptyMetrics, METRICS_KIND, writeMetrics } from "../plugins/eval/metrics.ts"
import { needlePerplexity } from "../plugins/eval/needle.ts"
import { EvalDataParams, IntervalParams, NeedleParams, PasskeyParams, RetrievalParams, ShortParams, TaskParams } from "../plugins/eval/params.ts"
import { passkeyRetrieval } from "../plugins/eval/passkey.ts"
import { perplexityByLength } from "../plugins/eval/perplexity.ts"
import { METHODS, PROTOCOLS } from "../plugins/eval/protocols.ts"
import { type Haystack, readHaystack } from "../plugins/eval/retrieval.ts"
import { retrievalEvaluation } from "../plugins/eval/retrieval-run.ts"
import { shortContext } from "../plugins/eval/short.ts"
import { choiceTasks, loadTask } from "../plugins/eval/tasks.ts"
import { attempt, corpusPath, fail, openModel, openTokenizer } from "./kit.ts"

export const EvaluateParams = Schema.Struct({
  lengths: Schema.NonEmptyArray(Schema.Int.check(Schema.isGreaterThanOrEqualTo(2))).pipe(doc("evaluation lengths in tokens, BOS included")),
  methods: Schema.NonEmptyArray(Schema.Literals(METHODS)).pipe(
    doc("RoPE settings compared, each at scale max(1, length/L0); model = the checkpoint's own rope_scaling; model+pi / model+yarn = PI / YaRN at max(1, length/L_ft) on top of the checkpoint's longest factor set (L_ft its max_length) (default none, pi, ntk, yarn)"),
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
  data: EvalDataParams.pipe(doc("where documents come from (default synthetic)"), withDefault({ source: "synthetic" } as const)),
  tokenizer: Schema.optionalKey(Schema.NonEmptyString.pipe(doc('"byte" or a folder with tokenizer.json (default the model folder\'s, else "byte")'))),
  originalLength: Schema.optionalKey(PosInt.pipe(doc("L0 for the scale (default config.json's original_max_position_embeddings, else max_position_embeddings)"))),
  label: Schema.NonEmptyString.pipe(doc('what metrics.json calls the checkpoint: "base" or the step that made it (default "base")'), withDefault("base")),
  chunk: Schema.optionalKey(PosInt.pipe(doc("tokens per forward chunk (memory only)"))),
  passkey: Schema.optionalKey(PasskeyParams.pipe(doc("passkey retrieval (longrope-method.md §5.2) for every method: { lengths, trials, depths, maxNew, seed }"))),
  needle: Schema.optionalKey(NeedleParams.pipe(doc("LongRoPE2 needle-driven perplexity (NLL of the answer tokens only) on the evaluation documents: { lengths, depths, seed }"))),
  short: Schema.optionalKey(ShortParams.pipe(doc("short-context fidelity: perplexity at L0 and KL to the checkpoint under plain RoPE: { length, scale }"))),
  retrieval: Schema.optionalKey(RetrievalParams.pipe(doc("RULER-shaped needle tasks for every method: { tasks, lengths, depths, trials, haystack, keys, values, queries, maxNew, seed }"))),
  tasks: Schema.optionalKey(Schema.Array(TaskParams).pipe(doc('multiple-choice tasks at L0 under the checkpoint\'s own RoPE: [{ name: "passkey-choice", items, length, choices, shots } | { name, files, fewshot: { files, shots }, description }]'))),
  sideBySide: Schema.optionalKey(
    Schema.NonEmptyString.pipe(
      doc("a group name: report.md lays this evaluation side by side with the others of the group (e.g. one fine-tune run with PI, YaRN and LongRoPE factors), the first in step order against each other: perplexity ratios, whether intervals overlap, passkey accuracy"),
    ),
  ),
  intervals: IntervalParams.pipe(doc("every number's interval: { level (0.95), replicates (2000), resample (documents) }"), withDefault({})),
})
export type EvaluateParams = typeof EvaluateParams.Type

const sortedUnique = (xs: readonly number[]): number[] => [...new Set(xs)].sort((a, b) => a - b)

/** The model, its tokenizer and documents, and what every evaluation shares. */
function setUp(ctx: StageContext<EvaluateParams, "model", "metrics">, lengths: readonly number[]) {
  return Effect.gen(function* () {
    const p = ctx.params
    const seed = p.seed ?? ctx.seed
    const longest = lengths[lengths.length - 1]!
    const tokens = p.tokens ?? longest
    const dir = ctx.inputs.model
    const tok = yield* attempt("tokenizer", () => openTokenizer(p.tokenizer, dir))
    const bos = tok.bos !== undefined
    // a window shorter than L would be reported as L: refuse instead
    if (tokens < longest - (bos ? 1 : 0)) return yield* fail(`tokens ${tokens}: documents must fill a window of the longest length ${longest} (${longest - (bos ? 1 : 0)} tokens after BOS)`)
    const { docs, data } = yield* attempt("data", () => evaluationDocuments({ data: p.data, samples: p.samples, seed, tokens, minTokens: p.minTokens }, tok))
    // task and haystack files are read before the model loads: a malformed one fails at once
    const tasks = yield* attempt("tasks", () => (p.tasks ?? []).map((t) => loadTask(t, tok, seed)))
    const h = p.retrieval?.haystack
    const haystack: Haystack = yield* attempt("retrieval.haystack", () => (h === undefined || typeof h === "string" ? { kind: h ?? "paper" } : readHaystack(h.file)))
    const needed = Math.max(longest, ...(p.passkey?.lengths ?? []).map((L) => L + p.passkey!.maxNew), ...(p.needle?.lengths ?? []), ...(p.retrieval?.lengths ?? []))
    const model = yield* openModel(dir, { length: needed })
    if (tok.vocabSize > model.config.vocabSize) {
      return yield* new TokenizerMismatch({ message: `tokenizer ${tok.name} has ${tok.vocabSize} ids but the model's vocab_size is ${model.config.vocabSize}`, tokenizerVocab: tok.vocabSize, modelVocab: model.config.vocabSize })
    }
    const spec = model.config.rope
    const e: EvalContext = {
      model, tok, bos, spec, L0: p.originalLength ?? spec.originalMaxPositions ?? spec.maxPositions, label: p.label, docs, data, seed, chunk: p.chunk,
      intervals: { ...p.intervals, seed }, checkpointDir: ctx.checkpointDir, progress: ctx.progress,
    }
    return { e, tokens, longest, tasks, haystack }
  })
}

/** Files the params name (resolved against the workflow file): the corpus, task files, the haystack text. */
function evaluatePaths(p: EvaluateParams) {
  const files = (p.tasks ?? []).flatMap((t, i) => [
    ...("files" in t ? t.files.map((_, j) => ({ path: ["tasks", i, "files", j], what: "task file" })) : []),
    ...("fewshot" in t && t.fewshot !== undefined ? t.fewshot.files.map((_, j) => ({ path: ["tasks", i, "fewshot", "files", j], what: "few-shot task file" })) : []),
  ])
  const h = p.retrieval?.haystack
  return [...corpusPath(p), ...files, ...(typeof h === "object" ? [{ path: ["retrieval", "haystack", "file"], what: "haystack text" }] : [])]
}

function runEvaluate(ctx: StageContext<EvaluateParams, "model", "metrics">) {
  return Effect.gen(function* () {
    const p = ctx.params
    const lengths = sortedUnique(p.lengths)
    const { e, tokens, longest, tasks, haystack } = yield* setUp(ctx, lengths)
    const skipShort = p.minTokens !== undefined && p.data.source === "corpus"
    const ppl = yield* perplexityByLength(e, { methods: p.methods, lengths, protocols: p.protocols, stride: p.stride, tokens, skipShort, minTokens: p.minTokens })
    const needle = p.needle === undefined ? [] : yield* needlePerplexity(e, { methods: p.methods, lengths: sortedUnique(p.needle.lengths ?? lengths), depths: p.needle.depths, seed: p.needle.seed ?? e.seed })
    const pk = p.passkey
    const passkey = pk === undefined ? [] : yield* passkeyRetrieval(e, { methods: p.methods, lengths: sortedUnique(pk.lengths), trials: pk.trials, depths: pk.depths ?? [undefined], maxNew: pk.maxNew, seed: pk.seed ?? e.seed })
    const rt = p.retrieval
    const retrieval = rt === undefined ? [] : yield* retrievalEvaluation(e, {
      methods: p.methods, tasks: rt.tasks, lengths: sortedUnique(rt.lengths), depths: rt.depths ?? [undefined], trials: rt.trials, haystack,
      keys: rt.keys, values: rt.values, queries: rt.queries, maxNew: rt.maxNew, seed: rt.seed ?? e.seed,
    })
    const taskRows = yield* choiceTasks(e, tasks)
    const short = p.short === undefined ? [] : yield* shortContext(e, { methods: p.methods, length: p.short.length ?? e.L0, scale: p.short.scale ?? Math.max(1, longest / e.L0), tokens })
    const group = <R extends object>(rows: readonly R[]): R[] => (p.sideBySide === undefined ? [...rows] : rows.map((r) => ({ ...r, group: p.sideBySide })))
    const perplexity = group([...ppl.rows, ...needle])
    yield* attempt("metrics.json", () => writeMetrics(ctx.outputs.metrics, { ...emptyMetrics(), perplexity, passkey: group(passkey), retrieval, tasks: taskRows, short }))
    const span = (x: { lo: number; hi: number; n: number }) => ({ lo: x.lo, hi: x.hi, n: x.n })
    return {
      passes: ppl.passes,
      perplexity: perplexity.map((x) => ({ method: x.method, length: x.length, protocol: x.protocol, value: x.value, ...(x.interval === undefined ? {} : span(x.interval)) })),
      passkey: passkey.map((x) => ({ method: x.method, length: x.length, ...(x.depth === undefined ? {} : { depth: x.depth }), accuracy: x.accuracy, ...(x.interval === undefined ? {} : span(x.interval)) })),
      retrieval: retrieval.map((x) => ({ task: x.task, method: x.method, length: x.length, ...(x.depth === undefined ? {} : { depth: x.depth }), accuracy: x.accuracy.value, ...span(x.accuracy) })),
      tasks: taskRows.map((x) => ({ task: x.task, acc: x.acc.value, acc_norm: x.acc_norm.value, items: x.items })),
      short: short.map((x) => ({ method: x.method, length: x.length, perplexity: x.perplexity, kl: x.kl })),
    }
  }).pipe(Effect.scoped)
}

export const evaluateStage = defineStage({
  name: "evaluate",
  // 2: intervals on every number, retrieval tasks, multiple-choice tasks, model+pi / model+yarn; generations checkpointed by content
  version: "2",
  description:
    "Perplexity by length under the model's RoPE and the none/PI/NTK/YaRN baselines at the same scale (or PI/YaRN on top of the model's own factors); protocols truncate, sliding, chunked (recorded beside every number); optionally passkey retrieval, RULER-shaped retrieval tasks at depths × lengths, multiple-choice tasks at L0, LongRoPE2 needle-driven perplexity and short-context fidelity (perplexity and KL at L0); every number with its interval and sample count; writes metrics.json",
  params: EvaluateParams,
  inputs: { model: "model" },
  outputs: { metrics: METRICS_KIND },
  paths: evaluatePaths,
  run: runEvaluate,
})
