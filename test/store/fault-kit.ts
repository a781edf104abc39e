// Shared by the store's fault tests: a small real workflow (search → finetune → evaluate → export on a
// random 2-layer model), child `bun run workflow` processes to kill, and the store's artifact listing.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { hashTree } from "../../common/hash.ts"
import type { Manifest } from "../../pipeline/workflow/index.ts"
import { writeRandomModel } from "../models/random-model.ts"

export { rng as seededRandom } from "../models/random-model.ts"

export const ROOT = resolve(import.meta.dirname, "../..")
export const BUN = process.execPath

/** A random model small enough that every stage takes seconds on llvmpipe (L0 32). */
export const writeFaultModel = (dir: string): string => {
  writeRandomModel(dir, { hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, vocab: 258, maxPositions: 32, seed: 12, configPatch: { bos_token_id: 256, eos_token_id: 257 } })
  return dir
}

export const FINETUNE_STEPS = 6

const STEPS = {
  search: `  search:
    stage: search
    inputs: { model: model }
    params: { mode: first, length: 128, samples: 1, data: { tasks: { filler: 1 } }, strategyParams: { populationSize: 4, iterations: 2, parents: 2, mutants: 1, crossovers: 1 } }`,
  finetune: `  finetune:
    stage: finetune-factors
    inputs: { model: model, factors: search.factors }
    params: { seqLen: 64, steps: ${FINETUNE_STEPS}, lr: 0.001, warmup: 1, checkpointEvery: 1, data: { tasks: { filler: 1 } } }`,
  evaluate: `  evaluate:
    stage: evaluate
    inputs: { model: finetune.model }
    params: { lengths: [32, 128], methods: [model, none], samples: 1, passkey: { lengths: [256], trials: 1 } }`,
  export: `  export:
    stage: export
    inputs: { model: finetune.model, factors: search.factors }
    params: { formats: [hf, csv, gguf], checkLengths: [32, 64] }`,
} as const
export type FaultStep = keyof typeof STEPS
export const ALL_STEPS: readonly FaultStep[] = ["search", "finetune", "evaluate", "export"]

/** Writes the workflow (all four steps, or the first few: their keys are the same) and returns its path. */
export const writeFaultWorkflow = (dir: string, model: string, steps: readonly FaultStep[] = ALL_STEPS): string => {
  const file = join(dir, `fault-${steps.join("-")}.yaml`)
  writeFileSync(file, `name: fault\nseed: 7\nmodel: ${model}\nsteps:\n${steps.map((s) => STEPS[s]).join("\n")}\n`)
  return file
}

/** Every committed artifact file as `<key>/out/<path> <sha256>`, sorted: equal lists = byte-identical artifacts under the same keys. */
export const artifactList = (store: string): string[] => {
  const dir = join(store, "_store")
  if (!existsSync(dir)) return []
  return readdirSync(dir).sort().flatMap((key) => hashTree(join(dir, key, "out")).files.map((f) => `${key}/out/${f.rel} ${f.sha256}`))
}

export interface Child {
  readonly proc: ReturnType<typeof Bun.spawn>
  /** stderr so far. */
  readonly stderr: () => string
  /** Exit code, stdout and stderr once it ends. */
  readonly done: Promise<{ code: number; stdout: string; stderr: string }>
}

/** `bun run workflow FILE --store STORE` as a child process; `prefix` wraps it (ulimit, setpriv). */
export const startRun = (file: string, store: string, prefix: readonly string[] = []): Child => {
  const proc = Bun.spawn([...prefix, BUN, "cli/workflow-main.ts", file, "--store", store], {
    cwd: ROOT,
    env: { ...process.env, EGL_PLATFORM: "surfaceless" },
    stdout: "pipe",
    stderr: "pipe",
  })
  let err = ""
  const errDone = (async () => {
    const decoder = new TextDecoder()
    for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) err += decoder.decode(chunk, { stream: true })
  })()
  const done = (async () => {
    const stdout = await new Response(proc.stdout as ReadableStream<Uint8Array>).text()
    const code = await proc.exited
    await errDone
    return { code, stdout, stderr: err }
  })()
  return { proc, stderr: () => err, done }
}

/** Polls `ready` every few ms; fails with `what` and the child's stderr after `ms`. */
export const waitUntil = async (ready: () => boolean, what: string, child: Child | undefined, ms = 120_000): Promise<void> => {
  const t0 = Date.now()
  while (!ready()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not reached in ${ms / 1000}s\n${child?.stderr() ?? ""}`)
    if (child !== undefined && child.proc.exitCode !== null) throw new Error(`${what}: the child exited (${child.proc.exitCode}) first\n${child.stderr()}`)
    await Bun.sleep(3)
  }
}

export const readManifest = (runDir: string): Manifest => JSON.parse(readFileSync(join(runDir, "manifest.json"), "utf8")) as Manifest

/** The run folder a finished child printed last. */
export const runDirOf = (stdout: string): string => stdout.trim().split("\n").at(-1) ?? ""
