/**
 * The runs a store holds: every `<workflow>/<run>/manifest.json` (store.ts), with what became of each.
 * A manifest still saying "running" whose process is gone was killed: it counts as interrupted.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { isAlive } from "./lock.ts"
import type { Manifest } from "./runner.ts"
import type { RunStore } from "./store.ts"

export type RunState = "running" | "finished" | "failed" | "interrupted"

export interface RunInfo {
  /** The run folder. */
  readonly dir: string
  readonly workflow: string
  readonly startedAt: string
  readonly finishedAt: string | null
  readonly state: RunState
  readonly steps: { readonly total: number; readonly ran: number; readonly cached: number }
  /** Store entries the run's steps were keyed to (committed or not). */
  readonly keys: readonly string[]
}

export const runState = (m: Pick<Manifest, "status"> & { readonly process?: Manifest["process"] }): RunState => {
  if (m.status === "done") return "finished"
  if (m.status !== "running") return m.status
  // a manifest from before runs recorded their process: nothing to ask, and nothing should still run it
  return m.process !== undefined && isAlive(m.process) ? "running" : "interrupted"
}

/** Every run folder in the store, oldest first; `problems` gets a line per manifest that cannot be read. */
export const listRuns = (store: RunStore, problems: string[] = []): RunInfo[] => {
  if (!existsSync(store.root)) return []
  const runs: RunInfo[] = []
  for (const wf of readdirSync(store.root)) {
    const wfDir = join(store.root, wf)
    if (wf.startsWith("_") || wf.startsWith(".") || !statSync(wfDir).isDirectory()) continue
    for (const name of readdirSync(wfDir)) {
      const file = join(wfDir, name, "manifest.json")
      if (!existsSync(file)) continue
      let m: Manifest
      try {
        m = JSON.parse(readFileSync(file, "utf8")) as Manifest
        if (!Array.isArray(m.steps) || typeof m.startedAt !== "string") throw new Error("not a run manifest")
      } catch (e) {
        problems.push(`${file}: ${e instanceof Error ? e.message : String(e)}`)
        continue
      }
      runs.push({
        dir: join(wfDir, name),
        workflow: m.workflow?.name ?? wf,
        startedAt: m.startedAt,
        finishedAt: m.finishedAt ?? null,
        state: runState(m),
        steps: {
          total: m.steps.length,
          ran: m.steps.filter((s) => s.status === "done").length,
          cached: m.steps.filter((s) => s.status === "cached").length,
        },
        keys: m.steps.flatMap((s) => (typeof s.key === "string" ? [s.key] : [])),
      })
    }
  }
  return runs.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : a.dir < b.dir ? -1 : 1))
}
