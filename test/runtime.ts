/**
 * Running the project's entry points in a child process under the runtime that runs the tests:
 * `bun FILE` or `deno run --allow-… FILE` (the permissions of deno.json's `ropeway` task), with the
 * environment the package.json scripts and deno.json tasks set.
 */
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { resolve } from "node:path"

export const ROOT = resolve(import.meta.dirname, "..")
export const UNDER_DENO = "Deno" in globalThis

const denoPermissions = (): string[] => {
  const tasks = (JSON.parse(readFileSync(resolve(ROOT, "deno.json"), "utf8")) as { tasks: Record<string, string> }).tasks
  return tasks["ropeway"]!.split(/\s+/).filter((a) => a.startsWith("--allow-"))
}

/** argv that runs a TypeScript entry point (relative to ROOT) with `args`. */
export const entryCommand = (script: string, ...args: readonly string[]): string[] =>
  UNDER_DENO ? [process.execPath, "run", ...denoPermissions(), script, ...args] : [process.execPath, script, ...args]

export interface RunResult {
  readonly code: number
  /** The signal that ended the child, if one did (e.g. SIGKILL after `killAfterMs`). */
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  readonly env?: Record<string, string | undefined>
  /** SIGKILL the child after this long (a hung child then ends the test with what it printed). */
  readonly killAfterMs?: number
}

/** Runs `argv` in ROOT to the end, collecting its output. */
export function runToEnd(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((done, fail) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, env: { ...process.env, EGL_PLATFORM: "surfaceless", ...options.env } })
    const timer = options.killAfterMs === undefined ? undefined : setTimeout(() => child.kill("SIGKILL"), options.killAfterMs)
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on("data", (b: Buffer) => out.push(b))
    child.stderr.on("data", (b: Buffer) => err.push(b))
    child.on("error", (e) => {
      clearTimeout(timer)
      fail(e)
    })
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      done({ code: code ?? (signal === null ? 1 : 128), signal, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") })
    })
  })
}
