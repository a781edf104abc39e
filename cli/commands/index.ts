// The CLI's subcommands, in the order `--help` lists them. Add a command: one file here, one line below.
import { exportCommand } from "./export.ts"
import { gc } from "./gc.ts"
import { generate } from "./generate.ts"
import { list } from "./list.ts"
import { plan } from "./plan.ts"
import { rope } from "./rope.ts"
import { run } from "./run.ts"
import { runs } from "./runs.ts"
import { score } from "./score.ts"
import { verify } from "./verify.ts"
import { worker } from "./worker.ts"

export const commands = [run, plan, runs, verify, gc, list, score, generate, rope, exportCommand, worker] as const
