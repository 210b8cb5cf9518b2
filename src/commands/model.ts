import { baseLayerCount, baseNames, isBaseName, kerasApplicationOf, type BaseModelName } from '../config/bases.ts';
import { UserError } from '../core/errors.ts';
import { blocksOf, buildBase } from '../models/base-builders.ts';
import { kerasClassName } from '../models/layers.ts';
import { table, type Style } from '../ui/format.ts';
import type { Terminal } from '../ui/terminal.ts';

export interface ModelCommandOptions {
  base: string;
  alpha: number;
  minimalistic: boolean;
  size: number;
  json: boolean;
  terminal: Terminal;
}

interface LayerRow {
  index: number;
  name: string;
  type: string;
  output: string;
  params: number;
  block: string;
}

interface BlockStart {
  block: string;
  /** fine_tune_at that unfreezes this block and everything after it. */
  fine_tune_at: number;
  trainable_layers: number;
  trainable_params: number;
}

/** The base's layers as Keras lists them, and where each block starts (a good fine_tune_at). */
function describeBase(base: BaseModelName, options: { alpha: number; minimalistic: boolean; size: number }) {
  const model = buildBase(base, {
    alpha: options.alpha,
    minimalistic: options.minimalistic,
    inputShape: [options.size, options.size, 3],
  });
  try {
    const blocks = blocksOf(
      base,
      model.layers.map((layer) => layer.name),
    );
    const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
    const rows: LayerRow[] = model.layers.map((layer, index) => ({
      index,
      name: layer.name,
      type: kerasClassName(layer),
      output: (layer.outputShape as number[]).slice(1).join('x'),
      params: layer.weights.reduce((sum, w) => sum + count(w.shape as number[]), 0),
      block: blocks[index],
    }));
    // What fine-tuning from a layer trains: gamma and beta of BatchNorm, kernels and biases (not the moving statistics).
    const trainableParams = model.layers.map((layer) =>
      layer.trainableWeights.reduce((sum, w) => sum + count(w.shape as number[]), 0),
    );
    const starts: BlockStart[] = rows
      .filter((row, i) => i > 0 && row.block !== rows[i - 1].block)
      .map((row) => ({
        block: row.block,
        fine_tune_at: row.index,
        trainable_layers: rows.slice(row.index).filter((r) => trainableParams[r.index] > 0).length,
        trainable_params: trainableParams.slice(row.index).reduce((a, b) => a + b, 0),
      }));
    const totalParams = rows.reduce((sum, row) => sum + row.params, 0);
    return { rows, starts, totalParams };
  } finally {
    model.dispose();
  }
}

function thousands(value: number): string {
  return value.toLocaleString('en-US');
}

/** The options' problems, one clear line each (the first is thrown). */
function checkModelOptions(options: ModelCommandOptions): BaseModelName {
  if (!isBaseName(options.base))
    throw new UserError(`model: unknown base ${options.base}; expected one of ${baseNames.join(', ')}`);
  const base = options.base;
  if (options.minimalistic && base !== 'mobilenet_v3_small' && base !== 'mobilenet_v3_large')
    throw new UserError(`model: --minimalistic is for mobilenet_v3_small and mobilenet_v3_large; found ${base}`);
  if (!Number.isInteger(options.size) || options.size < 32)
    throw new UserError(`model: --size ${options.size}: expected an integer >= 32`);
  if (!(options.alpha > 0)) throw new UserError(`model: --alpha ${options.alpha}: expected a number > 0`);
  return base;
}

/** The layer table with a line above each block's first layer: where fine_tune_at can start it. */
function layerLines(rows: LayerRow[], starts: BlockStart[], style: Style): string[] {
  const lines = table(
    [
      { header: 'index', value: (row: LayerRow) => String(row.index), right: true },
      { header: 'layer', value: (row) => row.name, shrink: true },
      { header: 'type', value: (row) => row.type, shrink: true },
      { header: 'output', value: (row) => row.output },
      { header: 'params', value: (row) => thousands(row.params), right: true },
    ],
    rows,
  ).split('\n');
  const byStart = new Map(starts.map((start) => [start.fine_tune_at, start]));
  const out = [lines[0]];
  rows.forEach((row, i) => {
    const start = byStart.get(row.index);
    if (start)
      out.push(
        style.dim(
          `── ${start.block} · fine_tune_at: ${start.fine_tune_at} trains ${start.trainable_layers} layers, ${thousands(start.trainable_params)} params ──`,
        ),
      );
    out.push(lines[i + 1]);
  });
  return out;
}

/** `tlx model <base>`: Keras's layer list of a base, block boundaries marked, to choose fine_tune_at. */
export async function modelCommand(options: ModelCommandOptions): Promise<void> {
  const base = checkModelOptions(options);
  const { rows, starts, totalParams } = describeBase(base, options);
  const layerCount = baseLayerCount({ base, minimalistic: options.minimalistic });
  if (options.json) {
    options.terminal.print(
      JSON.stringify({
        base,
        keras: kerasApplicationOf(base),
        alpha: options.alpha,
        minimalistic: options.minimalistic,
        input: [options.size, options.size, 3],
        layers: rows,
        blocks: starts,
        params: totalParams,
      }),
    );
    return;
  }
  const style = options.terminal.outputStyle;
  const alpha = base === 'efficientnet_b0' ? '' : `, alpha ${options.alpha}`;
  const title = `${kerasApplicationOf(base)}${options.minimalistic ? ' (minimalistic)' : ''}, include_top=False${alpha}, input ${options.size}x${options.size}x3`;
  const out = [
    style.bold(title),
    `${layerCount} layers (fine_tune_at 0..${layerCount}), ${thousands(totalParams)} parameters`,
    '',
    ...layerLines(rows, starts, style),
    '',
    `fine_tune_at: N trains layers N..${layerCount - 1} (BatchNorm stays in inference mode).`,
    "A block's first index keeps whole blocks together.",
  ];
  options.terminal.print(out.join('\n'));
}
