/**
 * A throwaway Postgres server for the cluster tests: initdb into a temp dir, pg_ctl start on a free
 * loopback port with the unix socket in that dir (away from /var/run/postgresql), stop + remove after.
 * As root, the server runs as the `postgres` user (initdb refuses root); else as the current user.
 * Also runnable: `bun test/cluster/pg.ts` starts one, prints its URL and stops it on Ctrl-C.
 */
import { spawnSync } from "node:child_process"
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface Pg {
  readonly url: string
  readonly port: number
  readonly dir: string
  /** Stops the server and removes its files; safe to call twice. */
  readonly stop: () => void
}

/** The newest Postgres bin folder: $PG_BIN, Debian's /usr/lib/postgresql/N/bin, or pg_ctl on PATH. */
export function pgBin(): string | undefined {
  const env = process.env["PG_BIN"]
  if (env !== undefined && existsSync(join(env, "pg_ctl"))) return env
  const root = "/usr/lib/postgresql"
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => existsSync(join(root, v, "bin", "pg_ctl")))
      .sort((a, b) => Number(a) - Number(b))
    const v = versions[versions.length - 1]
    if (v !== undefined) return join(root, v, "bin")
  }
  const onPath = Bun.which("pg_ctl")
  return onPath === null ? undefined : join(onPath, "..")
}

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const a = s.address()
      s.close(() => (typeof a === "object" && a !== null ? resolve(a.port) : reject(new Error("no port"))))
    })
  })

export async function startPg(bin: string): Promise<Pg> {
  const root = process.getuid?.() === 0
  const dir = mkdtempSync(join(tmpdir(), "ropeway-pg-"))
  const data = join(dir, "data")
  const run = (cmd: string, args: string[]): void => {
    const [c, a] = root ? ["runuser", ["-u", "postgres", "--", join(bin, cmd), ...args]] : [join(bin, cmd), args]
    const r = spawnSync(c, a as string[], { encoding: "utf8", timeout: 60_000 })
    if (r.status !== 0) throw new Error(`${cmd} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`)
  }
  let started = false
  const stop = (): void => {
    if (started) {
      started = false
      try {
        run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "-t", "20", "stop"])
      } catch {
        // Already gone; the files go anyway.
      }
    }
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    if (root) {
      chmodSync(dir, 0o755)
      const r = spawnSync("chown", ["postgres:", dir])
      if (r.status !== 0) throw new Error(`chown postgres ${dir} failed: ${r.stderr}`)
    }
    run("initdb", ["-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
    const port = await freePort()
    // fsync off: a test database; listen on loopback only.
    started = true
    run("pg_ctl", ["-D", data, "-l", join(dir, "log"), "-w", "-t", "30", "-o", `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c max_connections=50`, "start"])
    return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, port, dir, stop }
  } catch (e) {
    stop()
    throw e
  }
}

if (import.meta.main) {
  const bin = pgBin()
  if (bin === undefined) throw new Error("no Postgres binaries (install postgresql)")
  const pg = await startPg(bin)
  console.log(pg.url)
  const bye = (): void => {
    pg.stop()
    process.exit(0)
  }
  process.on("SIGINT", bye)
  process.on("SIGTERM", bye)
  setInterval(() => {}, 1 << 30)
}
