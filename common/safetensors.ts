/**
 * safetensors: reading (single files and HF sharded checkpoints) and atomic writing.
 *
 * Layout: u64 little-endian header length N, then N bytes of JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: {…} }`, then the data; offsets
 * are relative to the start of the data. Tensors are read one at a time, on demand, so loading a model
 * never holds the whole file in memory. Every problem is an InputError naming the file (and tensor).
 */
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from "node:fs"
import { basename, dirname, join } from "node:path"
import { inputError } from "./errors.ts"
import { writeFileAtomic } from "./files.ts"

/** Bytes per element of every dtype the format defines; only F32, F16 and BF16 can be decoded to f32. */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
}

export type FloatDType = "F32" | "F16" | "BF16"
export const FLOAT_DTYPES: readonly FloatDType[] = ["F32", "F16", "BF16"]
export const isFloatDType = (d: string): d is FloatDType => d === "F32" || d === "F16" || d === "BF16"

export interface TensorInfo {
  readonly name: string
  /** The file the tensor lives in. */
  readonly file: string
  readonly dtype: string
  readonly shape: readonly number[]
  /** Absolute byte range in the file. */
  readonly begin: number
  readonly end: number
}

/** One safetensors file: its header, parsed and checked, and on-demand tensor reads. */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  static open(path: string): SafetensorsFile {
    if (!existsSync(path)) throw inputError(path, "file not found")
    if (!statSync(path).isFile()) throw inputError(path, "not a file")
    const fd = openSync(path, "r")
    try {
      const size = fstatSync(fd).size
      if (size < 8) throw inputError(path, `not a safetensors file (${size} bytes, shorter than the 8-byte header length)`)
      const lenBytes = Buffer.alloc(8)
      readSync(fd, lenBytes, 0, 8, 0)
      const headerLen = Number(lenBytes.readBigUInt64LE(0))
      if (headerLen > 100_000_000 || 8 + headerLen > size) {
        throw inputError(path, `not a safetensors file (header length ${headerLen} does not fit in ${size} bytes)`)
      }
      const headerBytes = Buffer.alloc(headerLen)
      readSync(fd, headerBytes, 0, headerLen, 8)
      let header: unknown
      try {
        header = JSON.parse(headerBytes.toString("utf8"))
      } catch (e) {
        throw inputError(path, `malformed safetensors header (${oneLine(e)})`)
      }
      if (!isRecord(header)) throw inputError(path, "malformed safetensors header (not a JSON object)")
      const dataStart = 8 + headerLen
      const dataSize = size - dataStart
      const tensors = new Map<string, TensorInfo>()
      let metadata: Record<string, string> = {}
      for (const [name, entry] of Object.entries(header)) {
        if (name === "__metadata__") {
          // strings by the format; numbers and booleans are tolerated, anything nested is dropped
          if (isRecord(entry)) {
            metadata = Object.fromEntries(Object.entries(entry).flatMap(([k, v]) => (typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? [[k, String(v)]] : [])))
          }
          continue
        }
        tensors.set(name, parseEntry(path, name, entry, dataStart, dataSize))
      }
      return new SafetensorsFile(path, tensors, metadata)
    } finally {
      closeSync(fd)
    }
  }

  /** Reads one tensor as f32 (F32, F16 and BF16; other dtypes are an error naming the tensor). */
  read(name: string): Float32Array {
    const info = this.tensors.get(name)
    if (info === undefined) throw inputError(this.path, `no tensor "${name}"`)
    return readTensor(info)
  }
}

function parseEntry(path: string, name: string, entry: unknown, dataStart: number, dataSize: number): TensorInfo {
  const where = `tensor "${name}"`
  if (!isRecord(entry)) throw inputError(path, `${where}: header entry is not an object`)
  const { dtype, shape, data_offsets: offsets } = entry
  if (typeof dtype !== "string") throw inputError(path, `${where}: missing dtype`)
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) throw inputError(path, `${where}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`)
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
    throw inputError(path, `${where}: data_offsets must be [begin, end], got ${JSON.stringify(offsets)}`)
  }
  const [begin, end] = offsets as [number, number]
  if (begin > end || end > dataSize) throw inputError(path, `${where}: data_offsets [${begin}, ${end}] lie outside the ${dataSize} data bytes`)
  const elemBytes = DTYPE_BYTES[dtype]
  if (elemBytes === undefined) throw inputError(path, `${where}: unknown dtype ${dtype}`)
  const count = (shape as number[]).reduce((a, b) => a * b, 1)
  if (end - begin !== count * elemBytes) {
    throw inputError(path, `${where}: shape [${(shape as number[]).join(", ")}] of ${dtype} needs ${count * elemBytes} bytes, data_offsets give ${end - begin}`)
  }
  return { name, file: path, dtype, shape: shape as number[], begin: dataStart + begin, end: dataStart + end }
}

/** Reads and decodes one tensor to f32. */
export function readTensor(info: TensorInfo): Float32Array {
  if (!isFloatDType(info.dtype)) {
    throw inputError(info.file, `tensor "${info.name}" has dtype ${info.dtype}; expected one of ${FLOAT_DTYPES.join(", ")}`)
  }
  const bytes = info.end - info.begin
  // A fresh buffer, so typed-array views are aligned whatever the file offset.
  const raw = new Uint8Array(bytes)
  const fd = openSync(info.file, "r")
  try {
    let done = 0
    while (done < bytes) {
      const n = readSync(fd, raw, done, bytes - done, info.begin + done)
      if (n === 0) throw inputError(info.file, `tensor "${info.name}": file ends before its data does`)
      done += n
    }
  } finally {
    closeSync(fd)
  }
  return decode(info.dtype, raw.buffer)
}

function decode(dtype: FloatDType, buf: ArrayBuffer): Float32Array {
  if (dtype === "F32") return new Float32Array(buf)
  const halves = new Uint16Array(buf)
  const out = new Float32Array(halves.length)
  if (dtype === "BF16") {
    // bf16 is the top half of an f32.
    const bits = new Uint32Array(out.buffer)
    for (let i = 0; i < halves.length; i++) bits[i] = halves[i]! << 16
    return out
  }
  const table = f16Table()
  for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]!]!
  return out
}

let f16Lut: Float32Array | undefined

/** All 65536 f16 values as f32 (256 KiB), built once: a lookup beats bit twiddling per element. */
function f16Table(): Float32Array {
  if (f16Lut !== undefined) return f16Lut
  const t = new Float32Array(65536)
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1
    const exp = (h >> 10) & 0x1f
    const frac = h & 0x3ff
    t[h] = exp === 0 ? sign * frac * 2 ** -24 : exp === 31 ? (frac === 0 ? sign * Infinity : NaN) : sign * (1 + frac / 1024) * 2 ** (exp - 15)
  }
  return (f16Lut = t)
}

// ---- sharded checkpoints ---------------------------------------------------------------------

export const SINGLE_FILE = "model.safetensors"
export const INDEX_FILE = "model.safetensors.index.json"

/** A model folder's weights: `model.safetensors`, or shards listed by `model.safetensors.index.json`. */
export class Checkpoint {
  private constructor(
    readonly dir: string,
    /** What errors about the checkpoint as a whole name: the index file or the single file. */
    readonly source: string,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
  ) {}

  static open(dir: string): Checkpoint {
    const indexPath = join(dir, INDEX_FILE)
    const singlePath = join(dir, SINGLE_FILE)
    if (existsSync(indexPath)) return Checkpoint.fromIndex(dir, indexPath)
    if (existsSync(singlePath)) return new Checkpoint(dir, singlePath, SafetensorsFile.open(singlePath).tensors)
    throw inputError(dir, `no weights: neither ${SINGLE_FILE} nor ${INDEX_FILE} exists`)
  }

  private static fromIndex(dir: string, indexPath: string): Checkpoint {
    let index: unknown
    try {
      index = JSON.parse(readFileSync(indexPath, "utf8"))
    } catch (e) {
      throw inputError(indexPath, `malformed JSON (${oneLine(e)})`)
    }
    const map = isRecord(index) ? index["weight_map"] : undefined
    if (!isRecord(map)) throw inputError(indexPath, `missing field "weight_map" (an object from tensor name to file)`)
    const files = new Map<string, SafetensorsFile>()
    const tensors = new Map<string, TensorInfo>()
    for (const [name, file] of Object.entries(map)) {
      if (typeof file !== "string" || file === "" || file === "." || file === ".." || file.includes("/") || file.includes("\\")) {
        throw inputError(indexPath, `weight_map["${name}"] must be a file name in the folder, got ${JSON.stringify(file)}`)
      }
      let shard = files.get(file)
      if (shard === undefined) {
        const path = join(dir, file)
        if (!existsSync(path)) throw inputError(indexPath, `weight_map["${name}"] names ${file}, which does not exist`)
        files.set(file, (shard = SafetensorsFile.open(path)))
      }
      const info = shard.tensors.get(name)
      if (info === undefined) throw inputError(shard.path, `no tensor "${name}" (${basename(indexPath)} says it is here)`)
      tensors.set(name, info)
    }
    return new Checkpoint(dir, indexPath, tensors)
  }

  get(name: string): TensorInfo | undefined {
    return this.tensors.get(name)
  }

  read(name: string): Float32Array {
    const info = this.tensors.get(name)
    if (info === undefined) throw inputError(this.source, `missing tensor "${name}"`)
    return readTensor(info)
  }
}

// ---- writing ---------------------------------------------------------------------------------

export type WriteDType = FloatDType | "I32"

export interface TensorToWrite {
  readonly name: string
  readonly dtype: WriteDType
  readonly shape: readonly number[]
  /** Values in row-major order; floats are rounded to nearest-even for F16/BF16. */
  readonly data: ArrayLike<number>
}

/** Encodes tensors as one safetensors file's bytes. */
export function encodeSafetensors(tensors: readonly TensorToWrite[], metadata?: Readonly<Record<string, string>>): Uint8Array {
  const header: Record<string, unknown> = {}
  if (metadata !== undefined) header["__metadata__"] = metadata
  let offset = 0
  const parts: Uint8Array[] = []
  for (const t of tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1)
    if (count !== t.data.length) throw new Error(`${t.name}: ${t.data.length} values do not fill shape [${t.shape.join(", ")}]`)
    const bytes = encodeData(t.dtype, t.data)
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes.length] }
    parts.push(bytes)
    offset += bytes.length
  }
  let json = JSON.stringify(header)
  // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8)
  const headerBytes = Buffer.from(json, "utf8")
  const out = new Uint8Array(8 + headerBytes.length + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true)
  out.set(headerBytes, 8)
  let at = 8 + headerBytes.length
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

function encodeData(dtype: WriteDType, data: ArrayLike<number>): Uint8Array {
  const n = data.length
  if (dtype === "F32") return new Uint8Array(Float32Array.from(data).buffer)
  if (dtype === "I32") return new Uint8Array(Int32Array.from(data).buffer)
  const out = new Uint16Array(n)
  const enc = dtype === "F16" ? toF16Bits : toBf16Bits
  for (let i = 0; i < n; i++) out[i] = enc(data[i]!)
  return new Uint8Array(out.buffer)
}

/** Rounds half-way cases to even, as IEEE conversion does. */
function roundEven(x: number): number {
  const r = Math.round(x)
  return Math.abs(x - Math.trunc(x)) === 0.5 ? 2 * Math.round(x / 2) : r
}

/** Direct f64 → binary16-style bits with `mant` fraction bits and exponent bias `bias` (no double rounding). */
function toHalfBits(x: number, mant: number, expBits: number): number {
  const bias = (1 << (expBits - 1)) - 1
  const expMax = (1 << expBits) - 1
  const signBit = x < 0 || Object.is(x, -0) ? 1 << (mant + expBits) : 0
  if (Number.isNaN(x)) return (expMax << mant) | (1 << (mant - 1))
  const a = Math.abs(x)
  if (a === 0) return signBit
  let e = Math.floor(Math.log2(a))
  // log2 can be off by one near powers of two.
  if (2 ** e > a) e--
  else if (2 ** (e + 1) <= a) e++
  const minExp = 1 - bias
  if (e < minExp) {
    // Subnormal (may round up into the smallest normal, which the bit pattern handles).
    const m = roundEven(a / 2 ** (minExp - mant))
    return signBit | m
  }
  let m = roundEven((a / 2 ** e - 1) * 2 ** mant)
  if (m === 1 << mant) {
    m = 0
    e++
  }
  if (e + bias >= expMax) return signBit | (expMax << mant) // overflow → inf
  return signBit | ((e + bias) << mant) | m
}

export const toF16Bits = (x: number): number => toHalfBits(x, 10, 5)
export const toBf16Bits = (x: number): number => toHalfBits(x, 7, 8)

export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Readonly<Record<string, string>>): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata))
}

/**
 * Writes a checkpoint into `dir`: one `model.safetensors`, or with `shards` > 1 the HF sharded layout
 * (`model-0000i-of-0000n.safetensors` + index, written last so a reader never sees a partial set).
 */
export function writeCheckpoint(dir: string, tensors: readonly TensorToWrite[], options: { readonly shards?: number; readonly metadata?: Readonly<Record<string, string>> } = {}): void {
  const shards = Math.max(1, Math.min(options.shards ?? 1, tensors.length))
  const metadata = options.metadata ?? { format: "pt" }
  if (shards === 1) {
    rmSync(join(dir, INDEX_FILE), { force: true })
    writeSafetensors(join(dir, SINGLE_FILE), tensors, metadata)
    return
  }
  const pad = (i: number) => String(i).padStart(5, "0")
  const weightMap: Record<string, string> = {}
  let total = 0
  for (let s = 0; s < shards; s++) {
    const part = tensors.filter((_, i) => Math.floor((i * shards) / tensors.length) === s)
    const file = `model-${pad(s + 1)}-of-${pad(shards)}.safetensors`
    const bytes = encodeSafetensors(part, metadata)
    for (const t of part) total += t.data.length * (DTYPE_BYTES[t.dtype] ?? 4)
    writeFileAtomic(join(dir, file), bytes)
    for (const t of part) weightMap[t.name] = file
  }
  writeFileAtomic(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2))
  rmSync(join(dir, SINGLE_FILE), { force: true })
}

// ---- helpers ---------------------------------------------------------------------------------

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)
const isNonNegInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0
const oneLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ").trim()

/** True when `path` is an existing directory. */
export const isDirectory = (path: string): boolean => existsSync(path) && statSync(path).isDirectory()
