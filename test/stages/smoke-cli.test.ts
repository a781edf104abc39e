// `bun run workflow` (or `deno task workflow`, under Deno) as a user runs it, twice: the second run reuses every step, and both processes exit 0
// with the run folder as the last stdout line. (A cached run once crashed Bun at exit: Dawn's instance was
// released while other Dawn objects were still reachable, and a GC during report rendering freed it.)
import { afterAll, expect, test } from "bun:test"
import { existsSync, mkdtempSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { entryCommand, runToEnd } from "../runtime.ts"

const store = mkdtempSync(join(tmpdir(), "ropeway-smoke-cli-"))
afterAll(() => removeTree(store))

async function runWorkflow(): Promise<{ code: number; lastLine: string; stderr: string }> {
  const { code, stdout, stderr } = await runToEnd(entryCommand("cli/workflow-main.ts", "workflows/smoke.yaml", "--store", store))
  return { code, lastLine: stdout.trim().split("\n").at(-1) ?? "", stderr }
}

test("smoke workflow: run, then a fully cached rerun; both exit 0 and end with the run folder", async () => {
  const first = await runWorkflow()
  expect(first.code).toBe(0)
  expect(existsSync(join(first.lastLine, "manifest.json"))).toBe(true)
  expect(existsSync(join(first.lastLine, "report.md"))).toBe(true)
  const second = await runWorkflow()
  expect(second.code).toBe(0)
  expect(second.stderr).toContain("0 step(s) ran")
  expect(existsSync(join(second.lastLine, "metrics.json"))).toBe(true)
})
