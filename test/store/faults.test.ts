/**
 * Fault tests of the run store on a real workflow (search → finetune → evaluate → export on a random
 * 2-layer model, fault-kit.ts), each against one uninterrupted reference run:
 * - kill -9 at random moments inside each stage kind; each killed process leaves its step's lock behind,
 *   the next run takes it over and resumes; the final artifacts are byte-identical to the reference's;
 * - a truncated training checkpoint: the resumed run sets it aside and resumes from the one before;
 * - a full disk while a checkpoint and then an artifact is written (a tmpfs of fixed size when this
 *   process may mount one, else a per-file size limit, `ulimit -f`): a one-line error naming the file,
 *   nothing partial committed, and the run after space is freed completes;
 * - two runs of the workflow on one store at once: every step computed once, identical results;
 * - a flipped bit in a stored model: `ropeway verify` names the file and exits 1, the next run sets the
 *   entry aside with a warning naming the file and recomputes it, ending byte-identical again;
 * - writing into a run folder's outputs fails with a permission error.
 * Every run works on the same store path as the reference did (artifacts name their inputs' store paths),
 * the reference being moved aside. Kill moments come from a seeded generator; the seed is printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test"
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readSync, renameSync, statSync, truncateSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { listRuns } from "../../pipeline/workflow/runs.ts"
import { readHolder } from "../../pipeline/workflow/lock.ts"
import { checkEntry, type Manifest, removeTree, RunStore } from "../../pipeline/workflow/index.ts"
import {
  ALL_STEPS, artifactList, BUN, type Child, FINETUNE_STEPS, type FaultStep, readManifest, ROOT, runDirOf, seededRandom, startRun, waitUntil,
  writeFaultModel, writeFaultWorkflow,
} from "./fault-kit.ts"

const TIMEOUT = 240_000
const root = mkdtempSync(join(tmpdir(), "ropeway-faults-"))
chmodSync(root, 0o755) // an unprivileged user must reach the store (the permission test)
const model = writeFaultModel(join(root, "model"))
const STORE = join(root, "runs")
const REF = join(root, "ref")
const full = writeFaultWorkflow(root, model)
const isRoot = process.getuid?.() === 0
const t0 = performance.now()

const seed = Number(process.env["ROPEWAY_FAULT_SEED"] ?? Date.now() % 1_000_000)
const random = seededRandom(seed)
const pick = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1))

let ref: { artifacts: string[]; manifest: Manifest; key: Record<FaultStep, string> }

const fresh = (): RunStore => {
  removeTree(STORE)
  mkdirSync(STORE, { recursive: true })
  return new RunStore(STORE)
}
/** Every committed entry re-hashes to its record (nothing partial was committed). */
const allEntriesWhole = (store: RunStore): string[] => store.keys().flatMap((k) => checkEntry(store, k, "hash").mismatches.map((m) => `${m.file}: ${m.problem}`))
const finish = async (c: Child) => {
  const r = await c.done
  if (r.code !== 0) throw new Error(`run failed (${r.code}):\n${r.stderr}`)
  return r
}

beforeAll(async () => {
  console.log(`fault tests: seed ${seed} (ROPEWAY_FAULT_SEED=${seed} replays these kill moments)`)
  fresh()
  const r = await finish(startRun(full, STORE))
  const manifest = readManifest(runDirOf(r.stdout))
  ref = {
    artifacts: artifactList(STORE),
    manifest,
    key: Object.fromEntries(manifest.steps.map((s) => [s.name, s.key!])) as Record<FaultStep, string>,
  }
  renameSync(STORE, REF)
}, TIMEOUT)

afterAll(() => {
  console.log(`fault tests: ${((performance.now() - t0) / 1000).toFixed(1)} s in all`)
  removeTree(root)
})

const countFiles = (dir: string): number =>
  existsSync(dir) ? readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile() && e.name.endsWith(".json")).length : 0

describe("faults", () => {
  test("kill -9 at a random moment in each stage kind; the killed run's lock is taken over; the final artifacts equal an uninterrupted run's", async () => {
    const store = fresh()
    const evaluated = (ref.manifest.steps[0]!.result as { evaluated: number }).evaluated
    const tempOf = (key: string): string | undefined => readdirSync(join(STORE, "_tmp")).find((n) => n.startsWith(`${key}.`))
    // a moment inside each stage, drawn at random among the things it does
    const moments: Record<FaultStep, () => { what: string; reached: () => boolean }> = {
      search: () => {
        const k = pick(1, evaluated - 1)
        return { what: `search: ${k} of ${evaluated} candidates evaluated`, reached: () => countFiles(join(STORE, "_search-cache")) >= k }
      },
      finetune: () => {
        const n = pick(1, FINETUNE_STEPS - 1)
        return { what: `finetune: checkpoint ${n} of ${FINETUNE_STEPS}`, reached: () => existsSync(join(store.checkpointDir(ref.key.finetune), "training", `step-${String(n).padStart(8, "0")}`)) }
      },
      evaluate: () => {
        const k = pick(1, 3)
        return { what: `evaluate: ${k} measurements checkpointed`, reached: () => countFiles(store.checkpointDir(ref.key.evaluate)) >= k }
      },
      export: () => {
        const part = ["hf/config.json", "csv", "gguf"][pick(0, 2)]!
        return {
          what: `export: ${part} written`,
          reached: () => {
            const t = existsSync(join(STORE, "_tmp")) ? tempOf(ref.key.export) : undefined
            return t !== undefined && existsSync(join(STORE, "_tmp", t, "out", "export", part))
          },
        }
      },
    }
    for (const stage of ALL_STEPS) {
      const m = moments[stage]()
      const child = startRun(full, STORE)
      await waitUntil(m.reached, m.what, child)
      await Bun.sleep(random() * 15)
      child.proc.kill("SIGKILL")
      const r = await child.done
      expect(r.code).not.toBe(0)
      console.log(`killed ${child.proc.pid} at ${m.what}`)
      // the stage did not commit, nothing partial did, and the killed process's lock is still there
      expect(existsSync(store.entryDir(ref.key[stage]))).toBe(false)
      expect(allEntriesWhole(store)).toEqual([])
      expect(readHolder(store.lockPath(ref.key[stage]))?.pid).toBe(child.proc.pid!)
    }
    const last = await finish(startRun(full, STORE))
    expect(readManifest(runDirOf(last.stdout)).steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "done"])
    expect(artifactList(STORE)).toEqual(ref.artifacts)
    expect(readdirSync(join(STORE, "_locks"))).toEqual([])
    expect(listRuns(store).map((r) => r.state)).toEqual(["interrupted", "interrupted", "interrupted", "interrupted", "finished"])
  }, TIMEOUT)

  test("a truncated training checkpoint: the run sets it aside and resumes from the one before", async () => {
    const store = fresh()
    const file = writeFaultWorkflow(root, model, ["search", "finetune"])
    const training = join(store.checkpointDir(ref.key.finetune), "training")
    const child = startRun(file, STORE)
    await waitUntil(() => existsSync(join(training, "step-00000004")), "finetune checkpoint 4", child)
    child.proc.kill("SIGKILL")
    await child.done
    const steps = readdirSync(training).filter((n) => n.startsWith("step-")).sort()
    const newest = steps.at(-1)!
    const weights = join(training, newest, "model.safetensors")
    truncateSync(weights, Math.floor(statSync(weights).size / 2))
    const r = await finish(startRun(file, STORE))
    expect(r.stderr).toContain(`checkpoint ${join(training, newest)} is damaged (${weights}: checksum differs`)
    expect(r.stderr).toContain(`resuming at step ${Number(steps.at(-2)!.slice(5))}/${FINETUNE_STEPS} from ${join(training, steps.at(-2)!)}`)
    const keys = new Set([ref.key.search, ref.key.finetune])
    expect(artifactList(STORE)).toEqual(ref.artifacts.filter((a) => keys.has(a.slice(0, 32))))
  }, TIMEOUT)

  test("a full disk while a checkpoint, then an artifact is written: an error naming the file, nothing partial committed; after freeing space the run completes", async () => {
    const store = fresh()
    // a tmpfs of fixed size mounted on the store, filled to leave `free` bytes; else a per-file size limit (no root, no mount)
    // (ROPEWAY_FAULT_DISK=fsize takes the second way where the first is possible too)
    const mounted = isRoot && process.env["ROPEWAY_FAULT_DISK"] !== "fsize" && Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", STORE]).exitCode === 0
    console.log(`disk full: ${mounted ? "a 16 MiB tmpfs, filled" : "ulimit -f (no tmpfs: not root or mount refused)"}`)
    const filler = join(STORE, "filler")
    // free: bytes left on the tmpfs; largest: the size limit of each file otherwise
    const limit = (free: number, largest: number): string[] => {
      if (!mounted) return ["bash", "-c", `trap '' XFSZ; ulimit -f ${largest >> 10}; exec "$@"`, "limited"]
      const avail = Number(Bun.spawnSync(["df", "-B1", "--output=avail", STORE]).stdout.toString().trim().split("\n").at(-1))
      const fd = openSync(filler, "a")
      writeSync(fd, new Uint8Array(Math.max(0, avail - free)))
      closeSync(fd)
      return []
    }
    const unlimit = () => removeTree(filler)
    const nothingPartial = (key: string) => {
      expect(existsSync(store.entryDir(key))).toBe(false)
      expect(readdirSync(join(STORE, "_tmp"))).toEqual([])
      expect(allEntriesWhole(store)).toEqual([])
    }
    try {
      // a training checkpoint (weights 139 KiB + AdamW moments 278 KiB) does not fit in 300 KiB, nor its moments in a 200 KiB file
      let r = await startRun(full, STORE, limit(300 << 10, 200 << 10)).done
      expect(r.code).toBe(1)
      const training = join(store.checkpointDir(ref.key.finetune), "training")
      expect(r.stderr).toMatch(new RegExp(`error: step "finetune" \\(stage finetune-factors\\) failed: .*${training}/\\.tmp-step-00000001-\\d+/\\w+\\.safetensors: cannot write: .*\\((ENOSPC|EFBIG)\\)`))
      nothingPartial(ref.key.finetune)
      expect(readdirSync(training)).toEqual([])
      unlimit()

      await finish(startRun(writeFaultWorkflow(root, model, ["search", "finetune", "evaluate"]), STORE))
      // the GGUF file (142 KiB) does not fit in 100 KiB
      r = await startRun(full, STORE, limit(100 << 10, 100 << 10)).done
      expect(r.code).toBe(1)
      expect(r.stderr).toMatch(new RegExp(`error: step "export" \\(stage export\\) failed: .*/_tmp/${ref.key.export}\\.\\d+\\.\\d+/out/export/gguf/model-f32\\.gguf: cannot write: .*\\((ENOSPC|EFBIG)\\)`))
      nothingPartial(ref.key.export)
      unlimit()

      await finish(startRun(full, STORE))
      expect(artifactList(STORE)).toEqual(ref.artifacts)
    } finally {
      if (mounted) Bun.spawnSync(["umount", STORE])
    }
  }, TIMEOUT)

  test("two runs of one workflow on one store at once: each step computed once, identical results", async () => {
    fresh()
    const [a, b] = await Promise.all([finish(startRun(full, STORE)), finish(startRun(full, STORE))])
    const ma = readManifest(runDirOf(a.stdout))
    const mb = readManifest(runDirOf(b.stdout))
    for (let i = 0; i < ma.steps.length; i++) expect([ma.steps[i]!.status, mb.steps[i]!.status].sort()).toEqual(["cached", "done"])
    expect(ma.steps.map((s) => s.outputs)).toEqual(mb.steps.map((s) => s.outputs))
    expect(artifactList(STORE)).toEqual(ref.artifacts)
  }, TIMEOUT)

  test("a flipped bit in a stored model: verify names the file and exits 1; the next run sets the entry aside, recomputes it and ends byte-identical", async () => {
    removeTree(STORE)
    // a copy (new inodes): the first reuse re-hashes every file and writes the new stamps back
    expect(Bun.spawnSync(["cp", "-a", REF, STORE]).exitCode).toBe(0)
    const verify = () => Bun.spawnSync([BUN, "cli/main.ts", "verify", "--store", STORE], { cwd: ROOT, env: { ...process.env, EGL_PLATFORM: "surfaceless" } })
    let r = await finish(startRun(full, STORE))
    expect(readManifest(runDirOf(r.stdout)).steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "cached"])

    // the case: one bit of the final model's weights (export/hf is a hard link to finetune's model)
    const weights = join(STORE, "_store", ref.key.export, "out", "export", "hf", "model.safetensors")
    const also = join(STORE, "_store", ref.key.finetune, "out", "model", "model.safetensors")
    if (!isRoot) chmodSync(weights, 0o644)
    const fd = openSync(weights, "r+")
    const byte = new Uint8Array(1)
    const at = Math.floor(statSync(weights).size * 0.75)
    readSync(fd, byte, 0, 1, at)
    byte[0] = byte[0]! ^ 0x10
    writeSync(fd, byte, 0, 1, at)
    closeSync(fd)

    const v = verify()
    expect(v.exitCode).toBe(1)
    const report = v.stdout.toString()
    expect(report).toContain(`${weights}: content changed`)
    expect(report).toContain(`${also}: content changed`)
    expect(v.stderr.toString()).toContain("2 store entries do not match the record")

    r = await finish(startRun(full, STORE))
    expect(r.stderr).toContain(`warning: ${also}: content changed`)
    expect(r.stderr).toContain(`store entry ${ref.key.finetune} (step "finetune") moved to ${join(STORE, "_quarantine", ref.key.finetune)}`)
    expect(r.stderr).toContain(`warning: ${weights}: content changed`)
    // the model and its export are recomputed; the recomputed model has the reference's bytes, so the
    // evaluation keyed by them stands
    expect(readManifest(runDirOf(r.stdout)).steps.map((s) => s.status)).toEqual(["cached", "done", "cached", "done"])
    expect(artifactList(STORE)).toEqual(ref.artifacts)
    expect(verify().exitCode).toBe(0)
  }, TIMEOUT)

  test("writing into a run folder's outputs fails: read-only files and folders (checked as an unprivileged user when root)", () => {
    const run = listRuns(new RunStore(REF)).find((r) => r.state === "finished")!
    const config = join(run.dir, "steps", "export", "export", "hf", "config.json")
    const newFile = join(run.dir, "steps", "finetune", "model", "notes.txt")
    expect(existsSync(config)).toBe(true)
    expect(statSync(config).mode & 0o222).toBe(0)
    expect(statSync(join(run.dir, "steps", "finetune", "model")).mode & 0o222).toBe(0)
    // root passes every permission check: try as nobody (uid 65534), which is what a user's process is
    const asUser = (script: string) => Bun.spawnSync([...(isRoot ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : []), "sh", "-c", script])
    for (const script of [`echo '{}' > '${config}'`, `echo x >> '${config}'`, `echo x > '${newFile}'`, `rm -f '${config}'`]) {
      const r = asUser(script)
      expect(r.exitCode).not.toBe(0)
      expect(r.stderr.toString()).toContain("Permission denied")
    }
    expect(existsSync(newFile)).toBe(false)
    expect(allEntriesWhole(new RunStore(REF))).toEqual([])
  })
})

