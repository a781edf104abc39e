/**
 * What a training stage leaves behind: the trained model as a Hugging Face folder (pretrain, full
 * fine-tuning), or the base's weights linked with a LoRA adapter beside them in PEFT's layout.
 */
import { copyFileSync, existsSync, mkdirSync } from "node:fs"
import { join } from "node:path"
import { linkOrCopy, writeFileAtomic } from "../common/files.ts"
import { Checkpoint, writeCheckpoint } from "../common/safetensors.ts"
import type { LoraSpec, TrainableModel } from "../training/model.ts"
import { writePeftAdapter } from "../training/peft.ts"

/**
 * Writes a LoRA-trained model as a folder that reads as the adapted model: the base's weight files linked
 * (not copied: hard links cost nothing), the adapter in PEFT's layout beside them (training/peft.ts),
 * config.json and whichever of `copy` exist in `base`.
 */
export async function writeAdaptedFolder(dir: string, base: string, model: TrainableModel, lora: LoraSpec, configJson: unknown, copy: readonly string[]): Promise<void> {
  if (model.trainedTensors === undefined) throw new Error("this model family cannot give its trained tensors for an adapter file")
  mkdirSync(dir, { recursive: true })
  for (const f of Checkpoint.open(base).files()) linkOrCopy(join(base, f), join(dir, f))
  const tensors = await model.trainedTensors()
  // what trains besides the adapters is saved whole, as PEFT's modules_to_save (named by their last part)
  const saved = [...new Set(tensors.filter((t) => !/\.lora_[AB]\.weight$/.test(t.name)).map((t) => t.name.replace(/\.weight$/, "").split(".").at(-1)!))]
  const name = baseName(configJson)
  writePeftAdapter(dir, { rank: lora.rank, alpha: lora.alpha, dropout: lora.dropout, targets: lora.targets, modulesToSave: saved, ...(name === undefined ? {} : { base: name }) }, tensors)
  writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(configJson, null, 2)}\n`)
  for (const f of copy) if (existsSync(join(base, f))) copyFileSync(join(base, f), join(dir, f))
}

/**
 * The adapter's base_model_name_or_path: the config's `_name_or_path` (the hub id transformers records), or
 * null. Not the base folder's path: the base weights sit in this folder, and a path would make the
 * artifact's bytes depend on where the store is.
 */
const baseName = (configJson: unknown): string | undefined => {
  const n = (configJson as Record<string, unknown> | null)?.["_name_or_path"]
  return typeof n === "string" && n !== "" ? n : undefined
}

/** Files of an HF tokenizer folder carried into the model folder. */
export const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"]

/**
 * Writes a trained model as a Hugging Face folder: model.safetensors (with `note` in its metadata),
 * config.json, and whichever of `copy` exist in `from` (tokenizer files, generation config).
 */
export async function writeTrainedFolder(dir: string, model: TrainableModel, note: string, configJson: unknown, from: string | undefined, copy: readonly string[]): Promise<void> {
  mkdirSync(dir, { recursive: true })
  writeCheckpoint(dir, await model.hfTensors(), { metadata: { format: "pt", ropeway: note } })
  writeFileAtomic(join(dir, "config.json"), `${JSON.stringify(configJson, null, 2)}\n`)
  if (from !== undefined) for (const f of copy) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(dir, f))
}
