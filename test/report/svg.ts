// Checks for rendered charts without a DOM: XML well-formedness (balanced tags, one <svg> root), the
// text the chart shows, and a PNG's signature and size.

/** Throws unless `svg` is one balanced <svg> element with the SVG namespace (entities limited to XML's). */
export function assertWellFormedSvg(svg: string): void {
  const body = svg.replace(/^<\?xml[^>]*\?>\s*/, "").trim()
  if (!body.startsWith("<svg")) throw new Error("root is not <svg>")
  if (!/^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/.test(body)) throw new Error("no SVG namespace on the root")
  const stack: string[] = []
  let roots = 0
  const tag = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|<!--[\s\S]*?-->|<!\[CDATA\[[\s\S]*?\]\]>|<|&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/g
  let m: RegExpExecArray | null
  while ((m = tag.exec(body)) !== null) {
    if (m[0] === "<") throw new Error(`malformed tag at ${m.index}: ${body.slice(m.index, m.index + 40)}`)
    if (m[0].startsWith("&")) throw new Error(`bare & at ${m.index}: ${body.slice(m.index, m.index + 20)}`)
    if (m[2] === undefined) continue // comment / CDATA
    if (m[1] === "/") {
      const open = stack.pop()
      if (open !== m[2]) throw new Error(`</${m[2]}> closes <${open}> at ${m.index}`)
    } else if (m[4] !== "/") {
      if (stack.length === 0) roots++
      stack.push(m[2])
    } else if (stack.length === 0) roots++
  }
  if (stack.length > 0) throw new Error(`unclosed: ${stack.join(" > ")}`)
  if (roots !== 1) throw new Error(`${roots} root elements`)
}

const decode = (s: string): string =>
  s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&#(\d+);/g, (_, d: string) => String.fromCodePoint(Number(d))).replace(/&amp;/g, "&")

/** Every <text> (and <tspan>) content, decoded. */
export const svgTexts = (svg: string): string[] =>
  [...svg.matchAll(/<(text|tspan)\b[^>]*>([^<]*)</g)].map((m) => decode(m[2]!)).filter((t) => t.trim() !== "")

export function pngSize(png: Uint8Array): { width: number; height: number } {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]
  if (!sig.every((b, i) => png[i] === b)) throw new Error("not a PNG signature")
  const v = new DataView(png.buffer, png.byteOffset, png.byteLength)
  if (String.fromCharCode(...png.subarray(12, 16)) !== "IHDR") throw new Error("no IHDR chunk first")
  return { width: v.getUint32(16), height: v.getUint32(20) }
}

export const svgSize = (svg: string): { width: number; height: number } => {
  const m = /<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(svg)
  if (m === null) throw new Error("no width/height on <svg>")
  return { width: Number(m[1]), height: Number(m[2]) }
}
