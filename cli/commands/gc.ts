/**
 * `ropeway gc [--store DIR] [--keep-runs N] [--dry-run]`: removes runs beyond the newest N of each
 * workflow (with --keep-runs), then every store entry and checkpoint no kept run refers to, set-aside
 * entries and dead processes' leftovers; prints each removal and the bytes freed.
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { existsSync } from "node:fs"
import { relative } from "node:path"
import { inputError } from "../../common/errors.ts"
import { collectGarbage, formatBytes, RunStore } from "../workflow.ts"
import { storeFlag } from "./run.ts"

export const gc = Command.make(
  "gc",
  {
    store: storeFlag,
    keepRuns: Flag.Int("keep-runs").pipe(Flag.withDescription("keep only the newest N runs of each workflow (default: every run)"), Flag.optional),
    dryRun: Flag.Boolean("dry-run").pipe(Flag.withDescription("print what would be removed; remove nothing"), Flag.withDefault(false)),
  },
  ({ store, keepRuns, dryRun }) =>
    Effect.gen(function* () {
      const s = new RunStore(store)
      if (!existsSync(s.root)) return yield* inputError(s.root, "no run store here (--store DIR)")
      const keep = Option.getOrUndefined(keepRuns)
      if (keep !== undefined && keep < 0) return yield* inputError("--keep-runs", `expected a count ≥ 0, got ${keep}`)
      const r = collectGarbage(s, { ...(keep === undefined ? {} : { keepRuns: keep }), dryRun })
      for (const item of r.removed) yield* Console.log(`${dryRun ? "would remove" : "removed"} ${item.kind} ${relative(s.root, item.path)} (${formatBytes(item.bytes)})`)
      const count = (k: string) => r.removed.filter((i) => i.kind === k).length
      const parts = (["run", "entry", "checkpoint", "quarantined entry", "temp folder", "stale lock"] as const)
        .filter((k) => count(k) > 0)
        .map((k) => `${count(k)} ${count(k) === 1 ? k : k.endsWith("entry") ? `${k.slice(0, -1)}ies` : `${k}s`}`)
      yield* Console.log(
        `${dryRun ? "would free" : "freed"} ${formatBytes(r.freed)}${parts.length > 0 ? ` (${parts.join(", ")})` : ""}; kept ${r.keptRuns} run(s), ${r.keptEntries} entr${r.keptEntries === 1 ? "y" : "ies"}`,
      )
    }),
).pipe(Command.withDescription("Remove runs beyond --keep-runs and every store entry no kept run refers to; print what is freed"))
