/**
 * Which family reads a model folder: the first registered family that recognises its config.json. Every
 * stage, command and worker opens models through here, so a plugin's family serves them all.
 */
import { type } from "arktype"
import { existsSync, statSync } from "node:fs"
import { join } from "node:path"
import { DoesNotFit, inputError, ModelNotFound, UnsupportedModel } from "../../common/errors.ts"
import { checkJson, readJsonFile } from "../../common/validate.ts"
import type { Registry } from "../../pipeline/workflow/plugin.ts"
import { type InspectedModel, type InspectOptions, isModelFamily, type MemoryPlan, type ModelFamily } from "./family.ts"
import { llamaFamily } from "./llama/family.ts"

/** The families ropeway has without any plugin. */
export const BUILTIN_FAMILIES: readonly ModelFamily[] = [llamaFamily]

/** A workflow registry's families, then the built-in ones it does not already hold (a stage run on its own has only those). */
export const familiesOf = (registry: Registry | undefined): ModelFamily[] => {
  const own = registry?.all("families").filter(isModelFamily) ?? []
  return [...own, ...BUILTIN_FAMILIES.filter((b) => !own.some((f) => f.name === b.name))]
}

/** What every family's config.json has in common: how it names its architecture. */
const ConfigHead = type({
  "architectures?": "string[] | null",
  "model_type?": "string | null",
})

/** Reads `dir/config.json` as far as choosing a family needs; every problem names the file. */
export function readConfigJson(dir: string): { file: string; json: Record<string, unknown> } {
  if (!existsSync(dir)) throw new ModelNotFound({ path: dir, message: `${dir}: model folder does not exist` })
  if (!statSync(dir).isDirectory()) throw inputError(dir, "not a folder (expected a Hugging Face model folder)")
  const file = join(dir, "config.json")
  const json = readJsonFile(file, "not found (a Hugging Face model folder needs config.json)")
  checkJson(ConfigHead, json, file)
  return { file, json: json as Record<string, unknown> }
}

/** The family that reads `dir`, or UnsupportedModel naming what config.json says and what the families read. */
export function familyFor(families: readonly ModelFamily[], dir: string): ModelFamily {
  const { file, json } = readConfigJson(dir)
  const family = families.find((f) => f.recognizes(json))
  if (family !== undefined) return family
  const archs = json["architectures"]
  const named = Array.isArray(archs) && archs.length > 0 ? archs.map(String).join(", ") : typeof json["model_type"] === "string" ? `model_type ${json["model_type"]}` : undefined
  const supported = families.flatMap((f) => f.architectures).join(", ")
  const message = named === undefined ? `missing field "architectures" (e.g. ["LlamaForCausalLM"]); supported: ${supported}` : `unsupported architecture ${named}; supported: ${supported}`
  throw new UnsupportedModel({ file, message: `${file}: ${message}` })
}

/** The family by name (`pretrain`'s), or UnsupportedModel listing the registered ones. */
export function familyNamed(families: readonly ModelFamily[], name: string, where: string): ModelFamily {
  const f = families.find((x) => x.name === name)
  if (f === undefined) throw new UnsupportedModel({ file: where, message: `${where}: unknown model family "${name}"; known: ${families.map((x) => x.name).join(", ")}` })
  return f
}

/** Recognises and inspects a folder: the family and the model as it reads it (no GPU). */
export function inspectModel(families: readonly ModelFamily[], dir: string, options: InspectOptions = {}): { family: ModelFamily; model: InspectedModel } {
  const family = familyFor(families, dir)
  return { family, model: family.inspect(dir, options) }
}

/** The device limits a memory plan is checked against. */
export interface DeviceLimits {
  readonly maxStorageBufferBindingSize: number
  readonly maxBufferSize: number
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`

/** Refuses, before loading, a model whose buffers at `length` tokens exceed what the device allows for one. */
export function checkFits(family: ModelFamily, model: InspectedModel, length: number, limits: DeviceLimits, options: { readonly chunk?: number } = {}): MemoryPlan {
  const plan = family.memory(model, length, options)
  const over = (need: { bytes: number; what: string }, limit: number, name: string) => {
    if (need.bytes <= limit) return
    throw new DoesNotFit({
      message: `${model.config.dir}: ${need.what} needs ${mib(need.bytes)} at ${length} tokens; this device allows ${mib(limit)} per buffer (${name}); ` +
        `the model needs ${mib(plan.total)} in all (weights ${mib(plan.weights)}, KV cache ${mib(plan.kvCache)}, activations ${mib(plan.activations)})`,
      needed: need.bytes,
      limit,
    })
  }
  over(plan.largestBinding, limits.maxStorageBufferBindingSize, "maxStorageBufferBindingSize")
  over(plan.largestBuffer, limits.maxBufferSize, "maxBufferSize")
  return plan
}
