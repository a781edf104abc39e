/**
 * `ropeway verify [--store DIR]`: re-hashes every committed artifact and compares it with the store's
 * record; prints one line per file that differs and exits 1 when any does. The next run recomputes
 * such entries (it sets them aside first); `ropeway gc` removes what was set aside.
 */
import { Console, Effect } from "effect"
import { Command } from "effect/cli"
import { existsSync } from "node:fs"
import { inputError } from "../../common/errors.ts"
import { formatBytes, RunStore, verifyStore } from "../workflow.ts"
import { storeFlag } from "./run.ts"

export const verify = Command.make("verify", { store: storeFlag }, ({ store }) =>
  Effect.gen(function* () {
    const s = new RunStore(store)
    if (!existsSync(s.root)) return yield* inputError(s.root, "no run store here (--store DIR)")
    const lines: string[] = []
    const r = verifyStore(s, (c) => {
      const step = c.meta === undefined ? "" : ` (step "${c.meta.step}", entry ${c.key})`
      for (const m of c.mismatches) lines.push(`${m.file}: ${m.problem}${step}`)
    })
    for (const l of lines) yield* Console.log(l)
    yield* Console.log(`${r.entries} entries, ${r.files} files (${formatBytes(r.bytes)}) re-hashed: ${r.bad.length === 0 ? "all match their records" : `${lines.length} mismatch(es) in ${r.bad.length} entr${r.bad.length === 1 ? "y" : "ies"}`}`)
    if (r.bad.length > 0) {
      return yield* inputError(s.root, `${r.bad.length} store entr${r.bad.length === 1 ? "y does" : "ies do"} not match the record; the next run sets ${r.bad.length === 1 ? "it" : "them"} aside and recomputes`)
    }
  }),
).pipe(Command.withDescription("Re-hash every stored artifact against its record; exit 1 when any file differs"))
