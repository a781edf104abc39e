/** `ropeway runs [--store DIR] [--json]`: every run in the store, oldest first, with its status and steps. */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { relative } from "node:path"
import { listRuns, RunStore } from "../workflow.ts"
import { storeFlag } from "./run.ts"

const duration = (from: string, to: string | null): string => {
  if (to === null) return "-"
  const s = Math.max(0, (Date.parse(to) - Date.parse(from)) / 1000)
  return s < 60 ? `${s.toFixed(1)}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${(s / 3600).toFixed(1)}h`
}

export const runs = Command.make(
  "runs",
  { store: storeFlag, json: Flag.Boolean("json").pipe(Flag.withDescription("print the list as JSON"), Flag.withDefault(false)) },
  ({ store, json }) =>
    Effect.gen(function* () {
      const s = new RunStore(store)
      const problems: string[] = []
      const list = listRuns(s, problems)
      if (json) return yield* Console.log(JSON.stringify(list.map(({ keys: _keys, ...r }) => r), null, 2))
      const rows = [
        ["started", "status", "ran", "reused", "steps", "time", "run folder"],
        ...list.map((r) => [
          r.startedAt.replace("T", " ").replace(/\.\d+Z$/, "Z"), r.state, String(r.steps.ran), String(r.steps.cached), String(r.steps.total),
          duration(r.startedAt, r.finishedAt), relative(s.root, r.dir),
        ]),
      ]
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)))
      for (const row of rows) yield* Console.log(row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd())
      if (list.length === 0) yield* Console.log(`(no runs in ${s.root})`)
      for (const p of problems) yield* Console.error(`warning: ${p}`)
    }),
).pipe(Command.withDescription("List the store's runs with their status: running, finished, failed or interrupted"))
