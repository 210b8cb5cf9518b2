import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import { writeFileAtomic } from '../core/files.ts';

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

/** Renders a chart to a PNG file, written whole (temp, fsync, rename). */
export async function writeChartPng(spec: TopLevelSpec, file: string): Promise<void> {
  writeFileAtomic(file, svgToPng(await renderVegaLiteSvg(spec)));
}
