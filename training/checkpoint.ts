/**
 * Training checkpoints that resume exactly: f32 weights, AdamW moments, step, scheduler position, data
 * cursor, RNG state and config, in one folder per save under a root:
 *
 *   root/step-00000400/model.safetensors      weights (F32, the parameter names; HF-loadable)
 *                      optimizer.safetensors  "<name>.exp_avg", "<name>.exp_avg_sq" (F32)
 *                      trainer_state.json     step, scheduler, data, rng, config, architecture,
 *                                             parameter list, sha256 of both tensor files
 *
 * Atomic: everything is written (and fsynced) into `root/.tmp-…`, which is then renamed to `step-N`; a
 * crash before the rename leaves only a temp folder that readers ignore and the next save removes.
 * Older checkpoints are pruned (keep the last k) only after the new one is in place.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs"
import { basename, join } from "node:path"
import { InputError, inputError, oneLine } from "../common/errors.ts"
import { SafetensorsFile, SINGLE_FILE, encodeSafetensors } from "../common/safetensors.ts"
import { type Optimizer, type OptimizerState, type ParamState, shapeProblems } from "./optimizer.ts"
import { writeAll } from "../common/files.ts"
import { sha256 } from "../common/hash.ts"

export type Json = null | boolean | number | string | readonly Json[] | { readonly [key: string]: Json }

/** Everything besides tensors that a resumed run needs; each field is the caller's JSON. */
export interface TrainingMeta {
  /** Scheduler position (e.g. `{ step }`, or the schedule config with it). */
  readonly scheduler?: Json
  /** Data cursor: epoch, index into the shuffled order, …. */
  readonly data?: Json
  /** RNG state, e.g. `Rng.state()`. */
  readonly rng?: Json
  /** The run's configuration (hyper-parameters, seed, …). */
  readonly config?: Json
  /** What makes weights interchangeable (model config: layers, sizes, vocab, …); checked on load. */
  readonly architecture?: Json
}

export interface TrainingCheckpoint extends OptimizerState {
  readonly dir: string
  readonly meta: { readonly [K in keyof TrainingMeta]-?: Json }
}

export interface SaveOptions {
  /** How many complete checkpoints to keep (newest first); default 3. */
  readonly keep?: number
  /** Called after every file is written, before the commit rename (tests simulate crashes here). */
  readonly beforeCommit?: (tmpDir: string) => void
}

export interface LoadExpectation {
  /** Must equal the saved architecture (deep, key order ignored). */
  readonly architecture?: Json
  /** Exactly these tensors with these shapes. */
  readonly shapes?: ReadonlyMap<string, readonly number[]>
}

export const OPTIMIZER_FILE = "optimizer.safetensors"
export const STATE_FILE = "trainer_state.json"
const FORMAT = "ropeway-training-checkpoint"
const VERSION = 1
const STEP_DIR = /^step-(\d+)$/

/**
 * A checkpoint whose files are not what its trainer_state.json says (truncated, changed, missing, state
 * unreadable): unlike a checkpoint of another architecture, an older one may still serve.
 */
export class CheckpointDamaged extends InputError {}
const damaged = (file: string, problem: string): CheckpointDamaged => new CheckpointDamaged({ message: `${file}: ${oneLine(problem)}` })

/**
 * Restores the newest checkpoint under `root` that is whole, setting damaged newer ones aside
 * (`.damaged-step-N-<pid>`, ignored by readers); each one set aside is passed to `onDamaged`.
 * Undefined when none is left. Other errors (another architecture) are thrown as they are.
 */
export function restoreNewestTraining(
  root: string, optimizer: Optimizer, architecture: Json | undefined, onDamaged: (error: CheckpointDamaged, dir: string) => void,
): TrainingCheckpoint | undefined {
  for (const { dir } of listTrainingCheckpoints(root).reverse()) {
    try {
      return restoreTraining(dir, optimizer, architecture)
    } catch (e) {
      if (!(e instanceof CheckpointDamaged)) throw e
      renameSync(dir, join(root, `.damaged-${basename(dir)}-${process.pid}`))
      onDamaged(e, dir)
    }
  }
  return undefined
}

export const checkpointDirName = (step: number): string => `step-${String(step).padStart(8, "0")}`

/** Complete checkpoints under `root`, oldest first. */
export function listTrainingCheckpoints(root: string): { readonly step: number; readonly dir: string }[] {
  if (!existsSync(root)) return []
  const out: { step: number; dir: string }[] = []
  for (const name of readdirSync(root)) {
    const m = STEP_DIR.exec(name)
    if (m !== null && existsSync(join(root, name, STATE_FILE))) out.push({ step: Number(m[1]), dir: join(root, name) })
  }
  return out.sort((a, b) => a.step - b.step)
}

/** The newest complete checkpoint's folder, or undefined when there is none. */
export function latestTrainingCheckpoint(root: string): string | undefined {
  return listTrainingCheckpoints(root).at(-1)?.dir
}

/** Writes one checkpoint atomically; returns its folder. */
export function writeTrainingCheckpoint(root: string, state: OptimizerState, meta: TrainingMeta = {}, options: SaveOptions = {}): string {
  const keep = options.keep ?? 3
  if (!Number.isInteger(keep) || keep < 1) throw new RangeError(`checkpoint: keep must be an integer ≥ 1, got ${keep}`)
  mkdirSync(root, { recursive: true })
  // Leftovers of a crashed save (one writer per root): a temp folder is dropped; a step set aside for
  // a re-save whose replacement never landed is put back.
  for (const name of readdirSync(root)) {
    const aside = /^\.old-(step-\d+)-\d+$/.exec(name)
    if (aside !== null && !existsSync(join(root, aside[1]!))) renameSync(join(root, name), join(root, aside[1]!))
    else if (name.startsWith(".tmp-") || name.startsWith(".old-")) rmSync(join(root, name), { recursive: true, force: true })
  }
  const final = join(root, checkpointDirName(state.step))
  const tmp = join(root, `.tmp-${checkpointDirName(state.step)}-${process.pid}`)
  mkdirSync(tmp)
  try {
    const model = encodeSafetensors(state.params.map((p) => ({ name: p.name, dtype: "F32", shape: p.shape, data: p.value })), { format: "pt" })
    const opt = encodeSafetensors(state.params.flatMap((p) => [
      { name: `${p.name}.exp_avg`, dtype: "F32" as const, shape: p.shape, data: p.m },
      { name: `${p.name}.exp_avg_sq`, dtype: "F32" as const, shape: p.shape, data: p.v },
    ]))
    writeSynced(join(tmp, SINGLE_FILE), model)
    writeSynced(join(tmp, OPTIMIZER_FILE), opt)
    const doc = {
      format: FORMAT, version: VERSION, step: state.step,
      scheduler: meta.scheduler ?? null, data: meta.data ?? null, rng: meta.rng ?? null, config: meta.config ?? null,
      architecture: meta.architecture ?? null,
      params: state.params.map((p) => ({ name: p.name, shape: p.shape, weight_decay: p.weightDecay })),
      sha256: { [SINGLE_FILE]: sha256(model), [OPTIMIZER_FILE]: sha256(opt) },
    }
    writeSynced(join(tmp, STATE_FILE), JSON.stringify(doc, null, 1))
    fsyncDir(tmp)
    options.beforeCommit?.(tmp)
    if (existsSync(final)) {
      // Re-saving a step: move the old one aside first (rename cannot replace a non-empty folder).
      const aside = join(root, `.old-${checkpointDirName(state.step)}-${process.pid}`)
      renameSync(final, aside)
      renameSync(tmp, final)
      rmSync(aside, { recursive: true, force: true })
    } else {
      renameSync(tmp, final)
    }
    fsyncDir(root)
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true })
    throw e
  }
  const all = listTrainingCheckpoints(root)
  for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(old.dir, { recursive: true, force: true })
  return final
}

/** Reads and checks a checkpoint folder; every problem is an InputError naming the file. */
export function readTrainingCheckpoint(dir: string, expect: LoadExpectation = {}): TrainingCheckpoint {
  const statePath = join(dir, STATE_FILE)
  if (!existsSync(statePath)) throw inputError(dir, `not a training checkpoint (no ${STATE_FILE})`)
  let doc: unknown
  try {
    doc = JSON.parse(readFileSync(statePath, "utf8"))
  } catch (e) {
    throw damaged(statePath, `malformed JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  if (!isRecord(doc) || doc["format"] !== FORMAT) throw inputError(statePath, `not a ropeway training checkpoint (format is not "${FORMAT}")`)
  if (doc["version"] !== VERSION) throw inputError(statePath, `checkpoint format version ${JSON.stringify(doc["version"])}; this build reads version ${VERSION}`)
  const step = doc["step"]
  if (typeof step !== "number" || !Number.isInteger(step) || step < 0) throw inputError(statePath, `"step" must be an integer ≥ 0, got ${JSON.stringify(step)}`)
  const list = doc["params"]
  if (!Array.isArray(list) || !list.every((p) => isRecord(p) && typeof p["name"] === "string" && Array.isArray(p["shape"]))) {
    throw inputError(statePath, `"params" must be a list of { name, shape, weight_decay }`)
  }
  const params = list as { name: string; shape: number[]; weight_decay?: unknown }[]
  const architecture = (doc["architecture"] ?? null) as Json
  if (expect.architecture !== undefined && !jsonEqual(expect.architecture, architecture)) {
    throw inputError(statePath, `checkpoint from another architecture: ${jsonDiff(expect.architecture, architecture).join("; ")}`)
  }
  const found = new Map(params.map((p) => [p.name, p.shape]))
  if (expect.shapes !== undefined) {
    const problems = shapeProblems(expect.shapes, found)
    if (problems.length > 0) throw inputError(join(dir, SINGLE_FILE), `checkpoint from another architecture: ${problems.join("; ")}`)
  }
  const sums = isRecord(doc["sha256"]) ? doc["sha256"] : {}
  const files: Record<string, SafetensorsFile> = {}
  for (const name of [SINGLE_FILE, OPTIMIZER_FILE]) {
    const path = join(dir, name)
    if (!existsSync(path)) throw damaged(path, "file not found (checkpoint incomplete)")
    if (sha256(readFileSync(path)) !== sums[name]) throw damaged(path, `checksum differs from ${STATE_FILE}: the file is corrupt or was changed`)
    files[name] = SafetensorsFile.open(path)
  }
  const read = (file: string, tensor: string, shape: readonly number[]): Float32Array => {
    const f = files[file]!
    const info = f.tensors.get(tensor)
    if (info === undefined) throw inputError(f.path, `missing tensor "${tensor}"`)
    if (info.dtype !== "F32") throw inputError(f.path, `tensor "${tensor}" is ${info.dtype}; training checkpoints hold F32`)
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw inputError(f.path, `tensor "${tensor}" has shape [${info.shape.join(", ")}], ${STATE_FILE} says [${shape.join(", ")}]`)
    }
    return f.read(tensor)
  }
  const states: ParamState[] = params.map((p) => ({
    name: p.name, shape: p.shape, weightDecay: p.weight_decay !== false,
    value: read(SINGLE_FILE, p.name, p.shape),
    m: read(OPTIMIZER_FILE, `${p.name}.exp_avg`, p.shape),
    v: read(OPTIMIZER_FILE, `${p.name}.exp_avg_sq`, p.shape),
  }))
  const field = (k: string): Json => (doc as Record<string, Json>)[k] ?? null
  return {
    dir, step, params: states,
    meta: { scheduler: field("scheduler"), data: field("data"), rng: field("rng"), config: field("config"), architecture },
  }
}

/** Reads the optimizer's state from the GPU and writes a checkpoint. */
export async function saveTraining(root: string, optimizer: Optimizer, meta: TrainingMeta = {}, options: SaveOptions = {}): Promise<string> {
  return writeTrainingCheckpoint(root, await optimizer.exportState(), meta, options)
}

/**
 * Loads `dir` into `optimizer` (weights, moments, step) after checking it holds exactly the optimizer's
 * parameters and shapes (and `architecture`, when given); returns the checkpoint for the rest of the state.
 */
export function restoreTraining(dir: string, optimizer: Optimizer, architecture?: Json): TrainingCheckpoint {
  const shapes = new Map(optimizer.params.map((p) => [p.name, p.value.shape]))
  const ckpt = readTrainingCheckpoint(dir, architecture === undefined ? { shapes } : { shapes, architecture })
  optimizer.importState(ckpt, dir)
  return ckpt
}

// ---- helpers ---------------------------------------------------------------------------------

const writeSynced = (path: string, bytes: Uint8Array | string): void => writeAll(path, bytes, true)

/** Makes a rename or new entries durable; some platforms cannot open folders, which is harmless. */
function fsyncDir(path: string): void {
  let fd: number | undefined
  try {
    fd = openSync(path, "r")
    fsyncSync(fd)
  } catch {
    // best effort
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}


const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]))
  }
  if (!isRecord(a) || !isRecord(b)) return false
  const ka = Object.keys(a), kb = Object.keys(b)
  return ka.length === kb.length && ka.every((k) => k in b && jsonEqual(a[k], b[k]))
}

/** Phrases naming what differs, `path: X here, expected Y`, up to a handful. */
function jsonDiff(expected: unknown, found: unknown, path = "architecture", out: string[] = []): string[] {
  if (out.length >= 5 || jsonEqual(expected, found)) return out
  if (isRecord(expected) && isRecord(found)) {
    for (const k of new Set([...Object.keys(expected), ...Object.keys(found)])) jsonDiff(expected[k], found[k], `${path}.${k}`, out)
    return out
  }
  out.push(`${path} is ${JSON.stringify(found) ?? "absent"} in the checkpoint, expected ${JSON.stringify(expected) ?? "absent"}`)
  return out
}
