// The CLI's subcommands, in the order `--help` lists them. Add a command: one file here, one line below.
import { plan } from "./plan.ts"
import { rope } from "./rope.ts"
import { run } from "./run.ts"
import { score } from "./score.ts"

export const commands = [run, plan, score, rope] as const
