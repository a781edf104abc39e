/** A GPU tensor: a storage buffer plus its logical shape. Row-major, densely packed. */
export type DType = "f32" | "u32" | "i32"

export interface Tensor {
  readonly buffer: GPUBuffer
  readonly shape: readonly number[]
  readonly dtype: DType
}

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1)

export const bytesOf = (t: Tensor): number => numel(t.shape) * 4

export const shapeString = (shape: readonly number[]): string => `[${shape.join("×")}]`

/** Throws when a tensor's shape differs from what an op expects; names the op and the operand. */
export function expectShape(op: string, operand: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${op}: ${operand} has shape ${shapeString(t.shape)}, expected ${shapeString(shape)}`)
  }
}
