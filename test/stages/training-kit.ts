/**
 * What the training-stage tests share: a stage context that records progress, and the SIGKILL harness (a
 * `ropeway run` child killed once its Nth training checkpoint exists, then the same workflow run in
 * process to resume).
 */
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { existsSync, mkdirSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import { layerSilent, loadWorkflow, runWorkflow } from "../../cli/workflow.ts"
import { Gpu } from "../../kernels/device.ts"
import type { GpuRuntime } from "../../kernels/runtime.ts"
import type { StageContext } from "../../pipeline/workflow/stage.ts"

export const ROOT = join(import.meta.dirname, "..", "..")

export interface Ctx<P, I extends string> {
  readonly ctx: StageContext<P, I, "model">
  readonly notes: string[]
}

/** A context for running a training stage directly: output under `outRoot`, progress notes collected. */
export function trainingContext<P, I extends string>(step: string, params: P, inputs: Record<I, string>, seed: number, outRoot: string, checkpointDir: string, onReport?: (note: string) => void): Ctx<P, I> {
  const outDir = join(outRoot, "out")
  mkdirSync(outDir, { recursive: true })
  const notes: string[] = []
  return {
    notes,
    ctx: {
      step, params, seed, key: "test", inputs, outputs: { model: join(outDir, "model") }, outDir, checkpointDir,
      progress: {
        report: (_f, note) => Effect.sync(() => {
          notes.push(note ?? "")
          onReport?.(note ?? "")
        }),
        log: (line) => Effect.sync(() => void notes.push(line)),
      },
    },
  }
}

const groupAlive = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * Runs `ropeway run FILE --store STORE` in its own process group and SIGKILLs the group as soon as a training
 * checkpoint `step-0000000N` exists under the store; returns the checkpoint folders seen at the kill (empty
 * when the run ended or `deadlineMs` passed first).
 */
export async function killAtCheckpoint(file: string, store: string, step: number, deadlineMs: number): Promise<string[]> {
  const want = `step-${String(step).padStart(8, "0")}`
  const child = spawn(join(ROOT, "node_modules", ".bin", "bun"), ["cli/main.ts", "run", file, "--store", store, "--quiet"], {
    cwd: ROOT, env: { ...process.env, EGL_PLATFORM: "surfaceless" }, stdio: "ignore",
    // its own process group, so the kill reaches whatever it starts
    detached: true,
  })
  const exited = new Promise<number | null>((res) => child.on("exit", (code) => res(code)))
  let killedAt: string[] = []
  const deadline = Date.now() + deadlineMs
  for (;;) {
    const cps = join(store, "_checkpoints")
    const keys = existsSync(cps) ? readdirSync(cps) : []
    const steps = keys.flatMap((k) => (existsSync(join(cps, k, "training")) ? readdirSync(join(cps, k, "training")) : []))
    if (steps.includes(want)) {
      process.kill(-child.pid!, "SIGKILL")
      killedAt = steps
      break
    }
    if (Date.now() > deadline || child.exitCode !== null) break
    await sleep(5)
  }
  await exited
  // the group's last member may outlive the child by a moment
  for (let i = 0; i < 200 && groupAlive(child.pid!); i++) await sleep(10)
  return killedAt
}

/** The workflow run in this process on `rt` (quiet), to resume a killed store or make a fresh one. */
export const runWorkflowIn = (file: string, store: string, rt: GpuRuntime) =>
  Effect.runPromise(loadWorkflow(file).pipe(Effect.flatMap((wf) => runWorkflow(wf, { store, printRunDir: false })), Effect.provide(layerSilent), Effect.provideService(Gpu, rt)))
