import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';

/**
 * Charts are Vega-Lite specs rendered to SVG by Vega, then to PNG by resvg: a charting
 * library draws them, not hand-placed pixels.
 */
async function renderVegaLiteSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function svgToPng(svg: string, scale = 2): Buffer {
  const resvg = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: scale },
    background: 'white',
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
  });
  return Buffer.from(resvg.render().asPng());
}

/** Renders a chart to PNG bytes (the folder that keeps it writes them whole). */
export async function chartPng(spec: TopLevelSpec): Promise<Buffer> {
  return svgToPng(await renderVegaLiteSvg(spec));
}
