/**
 * The run store on toy stages (no GPU): read-only entries and their records, the cheap check on reuse
 * (a touched file is re-hashed and re-stamped, a changed one set aside and recomputed), the full check
 * of a running step's inputs (catches a change that kept size and mtime), a stage that writes into its
 * input, a lock whose pid was reused, `verify` on every kind of damage, `runs` and `gc`.
 */
import { describe, expect, test } from "bun:test"
import { Effect, Fiber, Schema } from "effect"
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import {
  appendFileSync, chmodSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync,
} from "node:fs"
import { join } from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import { collectGarbage } from "../../pipeline/workflow/gc.ts"
import { removeTree } from "../../pipeline/workflow/store.ts"
import {
  checkEntry, defineStage, definePlugin, layerCollect, layerSilent, type Manifest, planWorkflow, type ProgressEvent, RunStore, runWorkflow, StageError,
  verifyStore,
} from "../../pipeline/workflow/index.ts"
import { thisProcess } from "../../pipeline/workflow/lock.ts"
import { listRuns } from "../../pipeline/workflow/runs.ts"
import { load, run, tempDir, yamlFile } from "../pipeline/helpers.ts"
import { entryCommand, runToEnd } from "../runtime.ts"

const ran: string[] = []
const emit = defineStage({
  name: "emit", version: "1",
  params: Schema.Struct({ n: Schema.Int }),
  outputs: { out: "number", dir: "folder" },
  run: (ctx) =>
    Effect.sync(() => {
      ran.push(ctx.step)
      writeFileSync(ctx.outputs.out, `${ctx.params.n}`)
      mkdirSync(join(ctx.outputs.dir, "sub"), { recursive: true })
      writeFileSync(join(ctx.outputs.dir, "sub", "x.txt"), `${ctx.params.n}`.repeat(100))
    }),
})
const add = defineStage({
  name: "add", version: "1",
  params: Schema.Struct({ salt: Schema.optionalKey(Schema.Int) }),
  inputs: { a: "number", b: "number" },
  outputs: { out: "number" },
  run: (ctx) =>
    Effect.sync(() => {
      ran.push(ctx.step)
      const n = (p: string) => Number(readFileSync(p, "utf8"))
      writeFileSync(ctx.outputs.out, `${n(ctx.inputs.a) + n(ctx.inputs.b)}`)
    }),
})
/** Breaks the rule every stage keeps: appends to its input. */
const scribble = defineStage({
  name: "scribble", version: "1", params: Schema.Struct({}), inputs: { x: "number" }, outputs: { out: "number" },
  run: (ctx) =>
    Effect.try({
      try: () => {
        appendFileSync(ctx.inputs.x, "0")
        writeFileSync(ctx.outputs.out, "1")
      },
      catch: (e) => new StageError({ message: String(e) }),
    }),
})
/** Links its input (a file, or a folder's file `x`) into its output, as the export stage links weights. */
const linker = defineStage({
  name: "linker", version: "1", params: Schema.Struct({}), inputs: { x: "any" }, outputs: { out: "folder" },
  run: (ctx) =>
    Effect.sync(() => {
      mkdirSync(ctx.outputs.out)
      linkSync(statSync(ctx.inputs.x).isDirectory() ? join(ctx.inputs.x, "x") : ctx.inputs.x, join(ctx.outputs.out, "x"))
    }),
})
const fails = defineStage({
  name: "fails", version: "1", params: Schema.Struct({}), outputs: { out: "number" },
  run: () => Effect.fail(new StageError({ message: "no" })),
})
const slow = defineStage({
  name: "slow", version: "1", params: Schema.Struct({}), outputs: { out: "number" },
  run: (ctx) => Effect.sleep(60_000).pipe(Effect.andThen(Effect.sync(() => writeFileSync(ctx.outputs.out, "1")))),
})
const plugin = definePlugin({ name: "store-test", version: "1", stages: [emit, add, scribble, linker, fails, slow] })

const graph = (a: number, b: number, salt = 0, extra = "") => `name: sums
seed: 3
steps:
  a: { stage: emit, params: { n: ${a} } }
  b: { stage: emit, params: { n: ${b} } }
  s:
    stage: add
    params: { salt: ${salt} }
    inputs: { a: a.out, b: b.out }
${extra}`

const wfOf = (yaml: string) => load(yamlFile(yaml), { plugins: [plugin] })
const entry = (m: Manifest, step: string) => m.steps.find((s) => s.name === step)!
const isRoot = process.getuid?.() === 0

describe("entries", () => {
  test("a committed entry is read-only and records every file; the run folder links it", async () => {
    const store = tempDir()
    const r = await run(await wfOf(graph(1, 2)), store)
    const key = entry(r.manifest, "a").key!
    const s = new RunStore(store)
    const meta = s.lookup(key)!
    expect(Object.keys(meta.files!).sort()).toEqual(["dir/sub/x.txt", "out"])
    expect(meta.files!["out"]).toMatchObject({ size: 1, sha256: createHash("sha256").update("1").digest("hex") })
    for (const p of [s.outputPath(key, "out"), s.outputPath(key, "dir"), join(s.outputPath(key, "dir"), "sub"), join(s.outputPath(key, "dir"), "sub", "x.txt"), s.metaPath(key)]) {
      expect(statSync(p).mode & 0o222).toBe(0)
    }
    expect(readFileSync(join(r.runDir, "steps", "a", "dir", "sub", "x.txt"), "utf8")).toBe("1".repeat(100))
    expect(checkEntry(s, key, "hash").mismatches).toEqual([])
  })

  test("a file linked in from outside and still writable is copied, so the outside file keeps its mode", async () => {
    const store = tempDir()
    const dir = tempDir()
    writeFileSync(join(dir, "x"), "5")
    const r = await run(await wfOf(`name: l\nseed: 1\nmodel: ${dir}\nsteps:\n  l:\n    stage: linker\n    inputs: { x: model }\n`), store)
    const linked = join(entry(r.manifest, "l").outputs["out"]!.path, "x")
    expect(statSync(linked).ino).not.toBe(statSync(join(dir, "x")).ino)
    expect(statSync(join(dir, "x")).mode & 0o200).toBe(0o200)
  })

  test("reuse: a touched file (same bytes) is re-stamped; a changed one is set aside with a warning and recomputed", async () => {
    const store = tempDir()
    const wf = await wfOf(graph(3, 4))
    const r1 = await run(wf, store)
    const s = new RunStore(store)
    const keyA = entry(r1.manifest, "a").key!
    const out = s.outputPath(keyA, "out")
    const later = new Date(Date.now() + 5000)
    utimesSync(out, later, later)
    ran.length = 0
    const r2 = await run(wf, store)
    expect(r2.manifest.steps.map((x) => x.status)).toEqual(["cached", "cached", "cached"])
    expect(s.lookup(keyA)!.files!["out"]!.mtimeMs).toBe(statSync(out).mtimeMs)
    expect(r2.manifest.warnings).toEqual([])

    // a change through the folder: different size
    const x = join(s.outputPath(keyA, "dir"), "sub", "x.txt")
    chmodSync(x, 0o644)
    writeFileSync(x, "edited")
    const events: ProgressEvent[] = []
    const r3 = await run(wf, store, layerCollect(events))
    expect(r3.manifest.steps.map((st) => st.status)).toEqual(["done", "cached", "cached"])
    expect(ran).toEqual(["a"])
    const warning = `${x}: size 6 bytes, recorded 100: store entry ${keyA} (step "a") moved to ${join(store, "_quarantine", keyA)}`
    expect(r3.manifest.warnings).toHaveLength(1)
    expect(r3.manifest.warnings[0]).toStartWith(warning)
    expect(events).toContainEqual({ _tag: "Warning", line: r3.manifest.warnings[0]! })
    expect(readFileSync(x, "utf8")).toBe("3".repeat(100))
    expect(readdirSync(join(store, "_quarantine"))).toHaveLength(1)
  })

  test("an input changed without changing size or mtime: the full check before a running step catches it and re-runs its maker", async () => {
    const store = tempDir()
    const r1 = await run(await wfOf(graph(7, 8)), store)
    const s = new RunStore(store)
    const keyA = entry(r1.manifest, "a").key!
    const out = s.outputPath(keyA, "out")
    const st = statSync(out)
    chmodSync(out, 0o644)
    writeFileSync(out, "9")
    utimesSync(out, st.atime, st.mtime)
    chmodSync(out, 0o444)
    // the cheap check does not see it; a step that runs (a new salt) reads `a` and re-hashes it first
    ran.length = 0
    const r2 = await run(await wfOf(graph(7, 8, 1)), store)
    expect(r2.manifest.warnings[0]).toStartWith(`${out}: content changed (sha256 `)
    expect(r2.manifest.steps.map((x) => x.status)).toEqual(["done", "cached", "done"])
    expect(ran).toEqual(["a", "s"])
    expect(readFileSync(entry(r2.manifest, "s").outputs["out"]!.path, "utf8")).toBe("15")
  })

  test("a stage that writes into its input fails, and the input's entry is set aside", async () => {
    const store = tempDir()
    const r = await Effect.runPromise(Effect.result(runWorkflow(await wfOf(graph(1, 2, 0, "  w:\n    stage: scribble\n    inputs: { x: a.out }\n")), { store, printRunDir: false }).pipe(Effect.provide(layerSilent))))
    if (r._tag === "Success") throw new Error("expected a failure")
    // root writes through the read-only bits; ropeway's check after the stage catches it. Anyone else is refused.
    expect(r.failure.message).toMatch(isRoot ? /step "w" \(stage scribble\) failed: stage scribble wrote into its input "x": .*\/out: size 2 bytes, recorded 1/ : /EACCES|permission denied/i)
    const m = JSON.parse(readFileSync(join(r.failure.runDir!, "manifest.json"), "utf8")) as Manifest
    expect(existsSync(new RunStore(store).entryDir(entry(m, "w").key!))).toBe(false)
  })
})

describe("locks", () => {
  test("a lock naming a live pid that started at another time (a reused pid) is taken over", async () => {
    const store = tempDir()
    const wf = await wfOf(graph(5, 6))
    const key = (await Effect.runPromise(planWorkflow(wf, { store }))).steps[0]!.key!
    mkdirSync(join(store, "_locks"), { recursive: true })
    const me = thisProcess()
    writeFileSync(new RunStore(store).lockPath(key), `${me.pid} ${(me.start ?? 0) + 1}\n`)
    const r = await run(wf, store)
    expect(r.manifest.steps.map((x) => x.status)).toEqual(["done", "done", "done"])
    expect(readdirSync(join(store, "_locks"))).toEqual([])
  })
})

describe("verify", () => {
  test("names each damaged file: changed, missing, added, an edited record; an old entry is checked by its output hash, then sealed", async () => {
    const store = tempDir()
    const r = await run(await wfOf(graph(10, 20)), store)
    const s = new RunStore(store)
    expect(verifyStore(s).bad).toEqual([])
    const [a, b, sum] = ["a", "b", "s"].map((n) => entry(r.manifest, n).key!) as [string, string, string]
    const open = (p: string) => chmodSync(p, 0o755)
    // a: a changed byte (same size)
    const x = join(s.outputPath(a, "dir"), "sub", "x.txt")
    open(x)
    writeFileSync(x, `2${readFileSync(x, "utf8").slice(1)}`)
    // b: a file added, one removed
    open(s.outputPath(b, "dir"))
    open(join(s.outputPath(b, "dir"), "sub"))
    writeFileSync(join(s.outputPath(b, "dir"), "notes.txt"), "mine")
    renameSync(join(s.outputPath(b, "dir"), "sub", "x.txt"), join(store, "x-moved"))
    // s: its record edited to claim other bytes
    const meta = JSON.parse(readFileSync(s.metaPath(sum), "utf8"))
    meta.outputs.out.hash = "sha256:00"
    open(s.metaPath(sum))
    writeFileSync(s.metaPath(sum), JSON.stringify(meta))
    const v = verifyStore(s)
    const lines = v.bad.flatMap((c) => c.mismatches.map((m) => `${m.file}: ${m.problem}`))
    expect(v.entries).toBe(3)
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${x}: content changed \\(sha256 \\w+…, recorded \\w+…\\)$`)))
    expect(lines).toContain(`${join(s.outputPath(b, "dir"), "sub", "x.txt")}: missing (recorded 200 bytes)`)
    expect(lines).toContain(`${join(s.outputPath(b, "dir"), "notes.txt")}: not in the store's record (added after the step committed)`)
    expect(lines).toContain(`${s.metaPath(sum)}: edited after the step committed (its seal does not match)`)

    // an entry from before file records: its output hash still tells
    const old = { ...meta, outputs: { out: { kind: "number", hash: `sha256:${createHash("sha256").update("30").digest("hex")}` } } }
    delete old.files
    delete old.seal
    writeFileSync(s.metaPath(sum), JSON.stringify(old))
    const legacy = checkEntry(s, sum, "hash")
    expect(legacy.mismatches).toEqual([])
    // its records are written once it checks out, sealed
    s.restamp(legacy.meta!, legacy.restamp!)
    expect(checkEntry(s, sum, "stat").mismatches).toEqual([])
    open(s.outputPath(sum, "out"))
    writeFileSync(s.outputPath(sum, "out"), "31")
    expect(checkEntry(s, sum, "hash").mismatches.map((m) => m.file)).toEqual([s.outputPath(sum, "out")])
  })
})

describe("runs and gc", () => {
  test("runs: finished, failed, interrupted (Ctrl-C or killed), running", async () => {
    const store = tempDir()
    const s = new RunStore(store)
    await run(await wfOf(graph(1, 1)), store)
    await Effect.runPromise(Effect.result(runWorkflow(await wfOf(graph(1, 1, 0, "  f: { stage: fails }\n")), { store, printRunDir: false }).pipe(Effect.provide(layerSilent))))
    const fiber = Effect.runFork(runWorkflow(await wfOf(`name: slow\nseed: 1\nsteps:\n  z: { stage: slow }\n`), { store, printRunDir: false }).pipe(Effect.provide(layerSilent)))
    await sleep(200)
    await Effect.runPromise(Fiber.interrupt(fiber))
    // a run killed with -9 leaves its manifest saying "running"; one still going names this process
    const dead = spawnSync("true")
    const fake = (name: string, pid: number, start: number | null) => {
      mkdirSync(join(store, "sums", name), { recursive: true })
      writeFileSync(join(store, "sums", name, "manifest.json"), JSON.stringify({ format: 1, workflow: { name: "sums" }, status: "running", startedAt: `2099-01-0${name.length}T00:00:00.000Z`, finishedAt: null, steps: [], process: { pid, start } }))
    }
    fake("killed", dead.pid, null)
    fake("alive", process.pid, thisProcess().start)
    const runs = listRuns(s)
    // oldest first; the two made-up ones are dated 2099-01-05 (alive) and 2099-01-06 (killed)
    expect(runs.map((r) => [r.workflow, r.state])).toEqual([["sums", "finished"], ["sums", "failed"], ["slow", "interrupted"], ["sums", "running"], ["sums", "interrupted"]])
  })

  test("gc: --keep-runs N removes older runs and the entries only they used, counting freed bytes once per file; set-aside entries and leftovers go", async () => {
    const store = tempDir()
    const s = new RunStore(store)
    const old = await run(await wfOf(graph(1, 2)), store)
    const kept = await run(await wfOf(graph(1, 3)), store) // a is shared; b and s are new
    // leftovers: a set-aside entry, a dead process's temp folder and lock
    mkdirSync(join(store, "_quarantine", "x.1"), { recursive: true })
    writeFileSync(join(store, "_quarantine", "x.1", "f"), "12345")
    mkdirSync(join(store, "_tmp", "k.999999999.0", "out"), { recursive: true })
    writeFileSync(join(store, "_locks", "k"), "999999999 -\n")

    const all = collectGarbage(s, { dryRun: true })
    expect(all.removed.map((i) => i.kind).sort()).toEqual(["quarantined entry", "stale lock", "temp folder"])
    const dry = collectGarbage(s, { keepRuns: 1, dryRun: true })
    expect(s.keys()).toHaveLength(5)
    const done = collectGarbage(s, { keepRuns: 1 })
    expect(done.removed.map((i) => [i.kind, i.path])).toEqual(dry.removed.map((i) => [i.kind, i.path]))
    const gone = ["b", "s"].map((n) => s.entryDir(entry(old.manifest, n).key!))
    expect(done.removed.filter((i) => i.kind === "entry").map((i) => i.path).sort()).toEqual(gone.sort())
    expect(done.removed.find((i) => i.kind === "run")!.path).toBe(old.runDir)
    expect(s.keys().sort()).toEqual(kept.manifest.steps.map((x) => x.key!).sort())
    expect(existsSync(old.runDir)).toBe(false)
    expect(existsSync(join(store, "_quarantine", "x.1"))).toBe(false)
    expect(done.freed).toBe(done.removed.reduce((n, i) => n + i.bytes, 0))
    expect(done.removed.find((i) => i.kind === "quarantined entry")!.bytes).toBe(5)
    // the old b entry: "2" and "2"×100, plus meta.json
    const b = done.removed.find((i) => i.path === gone[0] || i.path === gone[1])!
    expect(b.bytes).toBeGreaterThan(100)
    // the kept run still reuses everything
    expect((await run(await wfOf(graph(1, 3)), store)).manifest.steps.map((x) => x.status)).toEqual(["cached", "cached", "cached"])
  })

  test("gc counts a file linked from a kept entry as not freed", async () => {
    const store = tempDir()
    const s = new RunStore(store)
    const first = await run(await wfOf(`${graph(4, 1)}  l:\n    stage: linker\n    inputs: { x: s.out }\n`), store)
    const sKey = entry(first.manifest, "s").key!
    const lKey = entry(first.manifest, "l").key!
    // only a run of `l` is left: a, b and s go; s's output lives on as a link in l's entry
    removeTree(first.runDir)
    mkdirSync(join(store, "other", "r"), { recursive: true })
    writeFileSync(join(store, "other", "r", "manifest.json"), JSON.stringify({ format: 1, workflow: { name: "other" }, status: "done", startedAt: "2099-01-01T00:00:00.000Z", finishedAt: "2099-01-01T00:00:01.000Z", steps: [{ name: "l", status: "done", key: lKey }] }))
    const metaSize = statSync(s.metaPath(sKey)).size
    const r = collectGarbage(s)
    expect(r.removed.filter((i) => i.kind === "entry")).toHaveLength(3)
    expect(r.removed.find((i) => i.path === s.entryDir(sKey))!.bytes).toBe(metaSize)
    expect(readFileSync(join(s.outputPath(lKey, "out"), "x"), "utf8")).toBe("5")
  })
})

describe("the commands", () => {
  const cli = async (...args: string[]) => {
    const r = await runToEnd(entryCommand("cli/main.ts", ...args))
    return { code: r.code, out: r.stdout, err: r.stderr }
  }
  test("runs, verify, gc as a user sees them", async () => {
    const store = tempDir()
    const first = await run(await wfOf(graph(1, 2)), store)
    await run(await wfOf(graph(1, 3)), store)
    const runs = await cli("runs", "--store", store)
    expect(runs.code).toBe(0)
    const lines = runs.out.trim().split("\n")
    expect(lines[0]).toMatch(/^started\s+status\s+ran\s+reused\s+steps\s+time\s+run folder$/)
    expect(lines.slice(1).map((l) => l.split(/\s{2,}/).slice(1, 5))).toEqual([["finished", "3", "0", "3"], ["finished", "2", "1", "3"]])
    expect(lines[1]).toEndWith(first.runDir.slice(store.length + 1))

    expect(await cli("verify", "--store", store)).toMatchObject({ code: 0, out: "5 entries, 8 files (305 B) re-hashed: all match their records\n" })

    const gc = await cli("gc", "--store", store, "--keep-runs", "1")
    expect(gc.code).toBe(0)
    const out = gc.out.trim().split("\n")
    expect(out.slice(0, -1).map((l) => l.replace(/ \(.*\)$/, "").replace(/[0-9a-f]{32}/, "KEY").replace(/\d{8}-\d{6}-\d+Z(-\d+)?/, "RUN")).sort()).toEqual(
      ["removed entry _store/KEY", "removed entry _store/KEY", "removed run sums/RUN"],
    )
    expect(out.at(-1)).toMatch(/^freed [\d.]+ KiB \(1 run, 2 entries\); kept 1 run\(s\), 3 entries$/)
    expect(await cli("gc", "--store", join(store, "nope"))).toMatchObject({ code: 1, err: `error: ${join(store, "nope")}: no run store here (--store DIR)\n` })
  })
})
