/**
 * Vega-Lite spec → SVG (vega, headless: renderer "none", no DOM, no canvas) → PNG (resvg).
 * Specs carry their data inline, so nothing is fetched; the `$schema` URL is only a label.
 */
import { Resvg } from "@resvg/resvg-js"
import * as vega from "vega"
import * as vl from "vega-lite"

/** A Vega-Lite spec as plain JSON (our builders make them; vega-lite checks them when compiling). */
export type VlSpec = Record<string, unknown>

export const VL_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"

/** Shared look: the font resvg has everywhere we run (DejaVu), white background, readable sizes. */
export const CHART_CONFIG = {
  font: "DejaVu Sans, sans-serif",
  background: "white",
  title: { fontSize: 14, anchor: "start", subtitleFontSize: 11, subtitleColor: "#555" },
  axis: { labelFontSize: 11, titleFontSize: 12 },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 260 },
} as const

/** Renders a Vega-Lite spec to an SVG string. */
export async function renderSvg(spec: VlSpec): Promise<string> {
  const { spec: compiled } = vl.compile(spec as unknown as vl.TopLevelSpec)
  const view = new vega.View(vega.parse(compiled), { renderer: "none" })
  try {
    return await view.toSVG()
  } finally {
    view.finalize() // timers and listeners would otherwise keep the process alive
  }
}

/** Rasterises an SVG to PNG at `zoom`× (2 gives crisp text on high-DPI screens); white behind. */
export function svgToPng(svg: string, zoom = 2): Uint8Array {
  const r = new Resvg(svg, {
    background: "white",
    fitTo: { mode: "zoom", value: zoom },
    font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" },
  })
  return r.render().asPng()
}

/** Charts a report section asks for: rendered later, embedded where the section wrote `{{chart:name}}`. */
export type ChartRequests = Array<{ readonly name: string; readonly title: string; readonly spec: VlSpec }>

export interface RenderedChart {
  /** File stem, e.g. "perplexity-truncate" → charts/perplexity-truncate.svg and .png. */
  readonly name: string
  readonly title: string
  readonly svg: string
  readonly png: Uint8Array
}

export async function renderChart(name: string, title: string, spec: VlSpec): Promise<RenderedChart> {
  const svg = await renderSvg(spec)
  return { name, title, svg, png: svgToPng(svg) }
}
