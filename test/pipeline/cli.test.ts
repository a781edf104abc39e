// The entry points: `bun run workflow` (cli/workflow-main.ts), the plan formatter and the progress reporter.
import { describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { formatPlan, makeConsoleProgress, planWorkflow } from "../../pipeline/workflow/index.ts"
import { fixture, load, run, tempDir, withBuiltins } from "./helpers.ts"

const root = join(import.meta.dirname, "../..")
const workflowMain = async (...args: string[]) => {
  const p = Bun.spawn([process.execPath, "cli/workflow-main.ts", ...args], { cwd: root, stdout: "pipe", stderr: "pipe" })
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited])
  return { stdout, stderr, code }
}

describe("bun run workflow", () => {
  test("prints progress on stderr and, as its last line, the run folder", async () => {
    const store = tempDir()
    const r = await workflowMain(fixture("good.yaml"), "--store", store)
    expect(r.code).toBe(0)
    const last = r.stdout.trimEnd().split("\n").at(-1)!
    expect(last.startsWith(join(store, "toy"))).toBe(true)
    expect(existsSync(join(last, "manifest.json"))).toBe(true)
    expect(r.stderr).toContain("[4/4] chain (chain) running")
    const again = await workflowMain(fixture("good.yaml"), "--store", store)
    expect(again.stderr).toContain("[4/4] chain: cached")
  })

  test("an invalid workflow: exit 1, one error line with file:line:col, no stack trace", async () => {
    const r = await workflowMain(fixture("unknown-stage.yaml"), "--store", tempDir())
    expect(r.code).toBe(1)
    const available = withBuiltins("stages", "chain", "const", "sum").join(", ")
    expect(available).toContain("evaluate")
    expect(r.stderr).toBe(`error: ${fixture("unknown-stage.yaml")}:9:12: steps.b.stage: unknown stage "konst"; available: ${available} (did you mean \"const\"?)\n`)
    expect(r.stdout).toBe("")
  })
})

describe("plan", () => {
  test("shows each step's key and whether it is cached or would run", async () => {
    const store = tempDir()
    const wf = await load(fixture("good.yaml"))
    const before = await Effect.runPromise(planWorkflow(wf, { store }))
    expect(before.steps.map((s) => s.status)).toEqual(["run", "run", "pending", "pending"])
    await run(wf, store)
    const after = await Effect.runPromise(planWorkflow(wf, { store }))
    expect(after.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "cached"])
    expect(after.steps[0]!.key).toBe(before.steps[0]!.key!)
    const text = formatPlan(after)
    expect(text).toContain(` 4. chain  chain@1  ${after.steps[3]!.key}  cached\n      x <- total.out\n      params {"delayMs":1,"iterations":6}`)
    expect(text).toContain("4 cached, 0 to run")
    expect(formatPlan(before)).toContain(` 3. total  sum@1    ?${" ".repeat(31)}  will run (key known after its inputs are made)`)
  })
})

describe("progress reporter", () => {
  const sink = (isTTY: boolean) => {
    const chunks: string[] = []
    return { out: { isTTY, columns: 200, write: (s: string) => chunks.push(s) }, chunks }
  }
  test("plain lines when not a TTY, with an ETA from fractional progress", async () => {
    const { out, chunks } = sink(false)
    let t = 0
    const p = makeConsoleProgress(out, () => t)
    await Effect.runPromise(p.emit({ _tag: "StepStart", index: 1, total: 3, step: "search", stage: "search" }))
    t = 10_000
    await Effect.runPromise(p.emit({ _tag: "StepProgress", step: "search", fraction: 0.25, note: "gen 1/4" }))
    t = 10_500 // throttled: under 2 s since the last line
    await Effect.runPromise(p.emit({ _tag: "StepProgress", step: "search", fraction: 0.3, note: undefined }))
    await Effect.runPromise(p.emit({ _tag: "StepDone", index: 1, total: 3, step: "search", seconds: 75 }))
    expect(chunks.join("")).toBe("[2/3] search (search) running\n[2/3] search (search) 25% ETA 30s gen 1/4\n[2/3] search: done in 1m15s\n")
  })
  test("the ETA leaves out the time before the first report (a first training step that compiles kernels)", async () => {
    const { out, chunks } = sink(false)
    let t = 0
    const p = makeConsoleProgress(out, () => t)
    const report = async (at: number, fraction: number) => {
      t = at
      await Effect.runPromise(p.emit({ _tag: "StepProgress", step: "finetune", fraction, note: undefined }))
    }
    await Effect.runPromise(p.emit({ _tag: "StepStart", index: 0, total: 1, step: "finetune", stage: "finetune" }))
    await report(160_000, 1 / 600) // 160 s of compiling: too early for an estimate
    await report(170_000, 21 / 600) // 20 steps in 10 s since: 579 left ≈ 289 s (from the start it would be ~1h18m)
    expect(chunks.join("")).toBe("[1/1] finetune (finetune) running\n[1/1] finetune (finetune) 0%\n[1/1] finetune (finetune) 4% ETA 4m49s\n")
  })
  test("one updating line on a TTY", async () => {
    const { out, chunks } = sink(true)
    let t = 0
    const p = makeConsoleProgress(out, () => t)
    await Effect.runPromise(p.emit({ _tag: "StepStart", index: 0, total: 1, step: "s", stage: "x" }))
    t = 1000
    await Effect.runPromise(p.emit({ _tag: "StepProgress", step: "s", fraction: 0.5, note: undefined }))
    await Effect.runPromise(p.emit({ _tag: "StepDone", index: 0, total: 1, step: "s", seconds: 2 }))
    expect(chunks).toEqual([
      "[1/1] s (x) ...",
      "\r\x1b[K",
      "[1/1] s (x) ##########.......... 50% ETA 1s",
      "\r\x1b[K",
      "[1/1] s: done in 2s\n",
    ])
  })
})
