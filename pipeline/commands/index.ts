// The CLI's subcommands, in the order `--help` lists them. Add a command: one file here, one line below.
import { rope } from "./rope.ts"
import { score } from "./score.ts"

export const commands = [score, rope] as const
