/** `plan`: what a run would do, without running anything: each step's cache key, hit or miss. */
import { Effect } from "effect"
import { existsSync } from "node:fs"
import { formatDiagnostic } from "./diagnostics.ts"
import type { Workflow } from "./loader.ts"
import { describeSource, inputHashes, stepKey } from "./runner.ts"
import { RunStore, type OutputRecord } from "./store.ts"
import { checkEntry, describeMismatches } from "./verify.ts"

export type PlanStatus =
  /** Stored: the run reuses it. */
  | "cached"
  /** Not stored: the run will run it. */
  | "run"
  /** Its key depends on artifacts not made yet: it will run (or hit the cache) after them. */
  | "pending"
  /** An input is missing on disk (e.g. model weights): `run` would fail at once. */
  | "missing-input"

export interface PlanStep {
  readonly name: string
  readonly stage: string
  readonly version: string
  readonly params: unknown
  readonly seed: number
  readonly inputs: Readonly<Record<string, string>>
  readonly key: string | null
  readonly status: PlanStatus
}

export interface Plan {
  readonly name: string
  readonly file: string
  readonly hash: string
  readonly seed: number
  readonly model: string | null
  readonly plugins: Workflow["plugins"]
  readonly store: string
  readonly steps: readonly PlanStep[]
  /** Problems that would stop `run` before any step (e.g. "model folder not found: ..."). */
  readonly problems: readonly string[]
}

/** One line per corpus that is not there: `file:line:col: steps.x.params.data.path: corpus not found: …`. */
export const missingFiles = (wf: Workflow): string[] => wf.files.filter((f) => !f.exists).map((f) => formatDiagnostic(f.where))

export const planWorkflow = (wf: Workflow, options: { readonly store?: string } = {}): Effect.Effect<Plan> =>
  Effect.sync(() => {
    const store = new RunStore(options.store ?? "runs")
    const problems: string[] = []
    if (wf.model.kind === "path" && !wf.model.exists) problems.push(`model folder not found: ${wf.model.path}`)
    problems.push(...missingFiles(wf))
    const made = new Map<string, OutputRecord & { readonly path: string }>()
    const missing = Symbol("missing")
    const external = (path: string): string => {
      if (wf.model.kind === "path" && path === wf.model.path && !wf.model.exists) throw missing
      return store.hashExternal(path)
    }
    const steps = wf.steps.map((step): PlanStep => {
      const base = {
        name: step.name, stage: step.stage.name, version: step.stage.version, params: step.paramsJson, seed: step.seed,
        inputs: Object.fromEntries(Object.entries(step.inputs).map(([k, s]) => [k, describeSource(s)])),
      }
      let hashes: ReturnType<typeof inputHashes>
      try {
        hashes = inputHashes(step, made, external)
      } catch (e) {
        if (e === missing) return { ...base, key: null, status: "missing-input" }
        throw e
      }
      if (hashes === undefined) return { ...base, key: null, status: "pending" }
      const key = stepKey(step, hashes)
      if (!existsSync(store.entryDir(key))) return { ...base, key, status: "run" }
      const check = checkEntry(store, key, "stat")
      if (check.meta === undefined || check.mismatches.length > 0) {
        problems.push(`${describeMismatches(check.mismatches)}: step "${step.name}" will be recomputed (its store entry is set aside)`)
        return { ...base, key, status: "run" }
      }
      for (const [o, rec] of Object.entries(check.meta.outputs)) made.set(`${step.name}.${o}`, { ...rec, path: store.outputPath(key, o) })
      return { ...base, key, status: "cached" }
    })
    return {
      name: wf.name, file: wf.file, hash: wf.hash, seed: wf.seed,
      model: wf.model.kind === "none" ? null : wf.model.kind === "path" ? wf.model.path : `${wf.model.name} (built-in)`,
      plugins: wf.plugins, store: store.root, steps, problems,
    }
  })

const statusText: Record<PlanStatus, string> = {
  cached: "cached",
  run: "will run",
  pending: "will run (key known after its inputs are made)",
  "missing-input": "blocked: input missing",
}

/** Human-readable plan: one block per step. */
export const formatPlan = (plan: Plan): string => {
  const lines = [
    `workflow ${plan.name} (${plan.file})`,
    `seed ${plan.seed}${plan.model !== null ? `, model ${plan.model}` : ""}`,
    `plugins: ${plan.plugins.map((p) => `${p.name}@${p.version}`).join(", ") || "none"}`,
    `store: ${plan.store}`,
    "",
  ]
  const width = Math.max(...plan.steps.map((s) => s.name.length))
  const stageWidth = Math.max(...plan.steps.map((s) => `${s.stage}@${s.version}`.length))
  plan.steps.forEach((s, i) => {
    const stage = `${s.stage}@${s.version}`.padEnd(stageWidth)
    lines.push(`${String(i + 1).padStart(2)}. ${s.name.padEnd(width)}  ${stage}  ${(s.key ?? "?").padEnd(32)}  ${statusText[s.status]}`)
    for (const [k, v] of Object.entries(s.inputs)) lines.push(`      ${k} <- ${v}`)
    const params = JSON.stringify(s.params)
    if (params !== "{}") lines.push(`      params ${params}`)
  })
  const counts = (st: PlanStatus) => plan.steps.filter((s) => s.status === st).length
  lines.push("", `${counts("cached")} cached, ${plan.steps.length - counts("cached")} to run`)
  for (const p of plan.problems) lines.push(`problem: ${p}`)
  return lines.join("\n")
}
