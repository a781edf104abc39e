/**
 * `ropeway inspect --model DIR [--length N] [--train lora|full] [--lora-rank R] [--lora-targets a,b] [--chunk N] [--json]`:
 * what a model folder holds (parameters, files, dtypes) and its memory plan at N tokens (scoring, or one
 * training step) against this device: the bytes of each part, the device's per-buffer limits and memory,
 * whether it fits, and the longest length that does. Nothing is loaded: the plan comes from config.json and
 * the tensor headers, as every stage's check before loading does.
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { inputError } from "../../common/errors.ts"
import { Checkpoint } from "../../common/safetensors.ts"
import { describeAdapter, Gpu } from "../../kernels/device.ts"
import type { MemoryOptions, MemoryPlan, TrainPlan } from "../../plugins/models/family.ts"
import { type DeviceBudget, deviceBudget, describeParts, formatBytes, LONGEST_SEARCHED, longestFit, whyNotFits, withKernels } from "../../plugins/models/memory.ts"
import { familiesOf, inspectModel } from "../../plugins/models/registry.ts"
import { LORA_DEFAULTS } from "../../stages/finetune.ts"
import { registryFromFlags } from "../workflow.ts"
import { kvCacheFlag, pluginFlag } from "./score.ts"

const attempt = <A>(f: () => A): Effect.Effect<A, Error> => Effect.try({ try: f, catch: (e) => (e instanceof Error ? e : new Error(String(e))) })

/** The weight files on disk: parameters, bytes and tensors per dtype. */
function weightFiles(dir: string) {
  const ckpt = Checkpoint.open(dir)
  const dtypes: Record<string, number> = {}
  let parameters = 0
  let bytes = 0
  for (const t of ckpt.tensors.values()) {
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1
    parameters += t.shape.reduce((a, b) => a * b, 1)
    bytes += t.end - t.begin
  }
  return { files: ckpt.files().filter((f) => f.endsWith(".safetensors")).length, parameters, bytes, dtypes }
}

const params = (n: number): string => (n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : `${(n / 1e3).toFixed(1)}K`)

function planLines(plan: MemoryPlan, budget: DeviceBudget): string[] {
  const row = (name: string, bytes: number | undefined) => (bytes === undefined || bytes === 0 ? [] : [`  ${name.padEnd(16)} ${formatBytes(bytes)}`])
  return [
    ...row("weights", plan.weights),
    ...row("LoRA", plan.lora),
    ...row("gradients", plan.gradients),
    ...row("optimizer state", plan.optimizer),
    ...row("KV cache", plan.kvCache),
    ...row("activations", plan.activations),
    `  ${"total".padEnd(16)} ${formatBytes(plan.total)} on the device, + ${formatBytes(plan.hostStaging)} host staging while loading`,
    `  ${"largest binding".padEnd(16)} ${plan.largestBinding.what}: ${formatBytes(plan.largestBinding.bytes)} (limit ${formatBytes(budget.maxStorageBufferBindingSize)})`,
    `  ${"largest buffer".padEnd(16)} ${plan.largestBuffer.what}: ${formatBytes(plan.largestBuffer.bytes)} (limit ${formatBytes(budget.maxBufferSize)})`,
  ]
}

export const inspect = Command.make(
  "inspect",
  {
    model: Flag.String("model").pipe(Flag.withDescription("Hugging Face model folder (config.json, *.safetensors)")),
    length: Flag.Int("length").pipe(Flag.withDescription("tokens to plan for (default: max_position_embeddings)"), Flag.optional),
    train: Flag.Literals("train", ["lora", "full"]).pipe(Flag.withDescription("plan one training step of --length tokens instead of scoring"), Flag.optional),
    loraRank: Flag.Int("lora-rank").pipe(Flag.withDescription(`LoRA rank (default ${LORA_DEFAULTS.rank})`), Flag.withDefault(LORA_DEFAULTS.rank)),
    loraTargets: Flag.String("lora-targets").pipe(Flag.withDescription(`comma-separated modules (default ${LORA_DEFAULTS.targets.join(",")})`), Flag.withDefault(LORA_DEFAULTS.targets.join(","))),
    loraNorms: Flag.Boolean("lora-norms").pipe(Flag.withDescription("the norms train too (LongLoRA)"), Flag.withDefault(false)),
    loraEmbeddings: Flag.Boolean("lora-embeddings").pipe(Flag.withDescription("the input embeddings train too (LongLoRA)"), Flag.withDefault(false)),
    chunk: Flag.Int("chunk").pipe(Flag.withDescription("tokens per forward chunk when scoring"), Flag.withDefault(512)),
    kvCache: kvCacheFlag,
    json: Flag.Boolean("json").pipe(Flag.withDescription("print one JSON object"), Flag.withDefault(false)),
    plugin: pluginFlag,
  },
  Effect.fn(function* (f) {
    if (f.chunk < 1) return yield* Effect.fail(inputError("--chunk", `must be ≥ 1, got ${f.chunk}`))
    const families = familiesOf(yield* registryFromFlags(f.plugin))
    const { family, model } = yield* attempt(() => inspectModel(families, f.model))
    const c = model.config
    const length = Option.getOrElse(f.length, () => c.rope.maxPositions)
    if (!Number.isInteger(length) || length < 1) return yield* Effect.fail(inputError("--length", `expected an integer ≥ 1, got ${length}`))
    let train: TrainPlan | undefined
    if (Option.isSome(f.train)) {
      if (family.trainable === undefined) return yield* Effect.fail(inputError("--train", `model family "${family.name}" has no training support`))
      if (f.train.value === "full") train = { mode: "full" }
      else {
        const targets = f.loraTargets.split(",").map((s) => s.trim()).filter((s) => s !== "")
        const known = family.loraTargets?.(c) ?? []
        for (const t of targets) if (!known.includes(t)) return yield* Effect.fail(inputError("--lora-targets", `"${t}" names no module LoRA can adapt; known: ${known.join(", ")}`))
        if (f.loraRank < 1) return yield* Effect.fail(inputError("--lora-rank", `must be ≥ 1, got ${f.loraRank}`))
        train = { mode: "lora", rank: f.loraRank, targets, trainNorms: f.loraNorms, trainEmbeddings: f.loraEmbeddings }
      }
    }
    const disk = yield* attempt(() => weightFiles(f.model))
    const options: MemoryOptions = train === undefined ? { chunk: f.chunk, ...(Option.isSome(f.kvCache) ? { kvCache: f.kvCache.value } : {}) } : { train }
    const rt = yield* Gpu
    const budget = deviceBudget(rt)
    const plan = family.memory(model, length, withKernels(options, budget))
    const why = whyNotFits(plan, budget)
    const longest = longestFit(family, model, budget, options)
    const task = train === undefined ? `scoring ${length} tokens in chunks of ${Math.min(f.chunk, length)}` : `one ${train.mode === "lora" ? `LoRA (r=${train.rank}, ${train.targets.join(", ")})` : "full"} training step of ${length} tokens`
    const doing = `${task} on the ${rt.adapter.profile} kernels`
    if (f.json) {
      yield* Console.log(JSON.stringify({
        model: f.model, family: family.name, architecture: c.architecture, layers: c.numLayers, hidden: c.hiddenSize, vocab: c.vocabSize,
        weightsOnDisk: disk, adapter: describeAdapter(rt.adapter),
        limits: { maxStorageBufferBindingSize: budget.maxStorageBufferBindingSize, maxBufferSize: budget.maxBufferSize, memory: budget.memory ?? null, host: budget.host },
        plan: { ...plan, doing }, fits: why === undefined, ...(why === undefined ? {} : { reason: why }), longest,
      }))
      return
    }
    const longestText = longest === 0 ? "none: not even 1 token fits" : longest >= LONGEST_SEARCHED ? `at least ${LONGEST_SEARCHED} tokens` : `${longest} tokens`
    yield* Console.log([
      `model        ${f.model} (${c.architecture}, ${family.name} family): ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}`,
      `on disk      ${params(disk.parameters)} parameters, ${formatBytes(disk.bytes)} in ${disk.files} file${disk.files === 1 ? "" : "s"} (${Object.entries(disk.dtypes).map(([d, n]) => `${n} ${d}`).join(", ")})`,
      `adapter      ${describeAdapter(rt.adapter)}`,
      `memory       ${budget.memory === undefined ? "the device's memory is unknown (set ROPEWAY_MEMORY to state it)" : `${formatBytes(budget.memory.bytes)}: ${budget.memory.what}`}`,
      `plan         ${doing}`,
      ...planLines(plan, budget),
      `fits         ${why === undefined ? "yes" : `no: needs ${formatBytes(why.need.bytes)} (${why.need.what}); ${why.have.what} is ${formatBytes(why.have.bytes)}`}`,
      `longest      ${longestText} (${train === undefined ? "scoring" : "training"}, same settings)`,
    ].join("\n"))
  }, (e) => Effect.provide(e, Gpu.layer)),
).pipe(Command.withDescription("A model folder's memory plan at a length (scoring or training) against this device, and the longest length that fits"))
