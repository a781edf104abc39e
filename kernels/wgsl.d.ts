// WGSL sources are imported as text: `import src from "./matmul.wgsl" with { type: "text" }`.
declare module "*.wgsl" {
  const source: string
  export default source
}
