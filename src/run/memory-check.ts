import type { ResolvedExperiment } from '../config/resolved.ts';
import type { PreparedDataset } from '../data/dataset.ts';
import type { RunSummary } from '../run-folder/records.ts';
import { formatBytes } from '../core/bytes.ts';
import { UserError } from '../core/errors.ts';
import { cacheMemoryBytes, memoryLimit, type MemoryLimit } from '../core/memory.ts';
import { imageVariants } from '../data/augment.ts';
import { setPhaseTrainable, type Classifier, type Phase } from '../models/classifier.ts';
import { compileGraph, splitGraph, type Layer } from '../engine/graph.ts';
import { cheapestPrefix } from '../engine/recompute.ts';
import { cacheRoom } from '../train/engine.ts';
import { planFrozenOutputsCache } from '../engine/frozen-outputs.ts';
import {
  largestBatchWithin,
  peakOf,
  phaseMemory,
  weightBytes,
  type Moment,
  type PhaseMemory,
} from '../train/memory.ts';
import type { RunModel } from './model-stage.ts';
import type { RunContext } from './run.ts';
import { frozenOutputsStorage, keepsFeatureExtractionOutputs, sharedPrefixOf } from './train-stage.ts';

/** The memory a run's training needs, phase by phase, against what the process can use. */

interface PhaseEstimate {
  phase: Phase;
  /** Samples in a training batch: batch_size, or the whole training split when smaller. */
  batch: number;
  memory: PhaseMemory;
  peak: number;
  moment: Moment['name'];
}

export interface TrainingMemory {
  /** What the process held when the estimate was made (its RSS). */
  resident: number;
  phases: PhaseEstimate[];
  /** The phase with the highest peak (undefined when no phase trains). */
  highest?: PhaseEstimate;
  limit: MemoryLimit;
}

export interface SplitSizes {
  train: { length: number };
  validation: { length: number };
}

/**
 * Each training phase's peak from the classifier's graph, as the engine will run it (its
 * trainable flags, its frozen layers' outputs cache or none). Leaves the classifier's trainable flags at
 * the last phase's: training sets each phase's own before it starts.
 */
export function estimateTrainingMemory(
  config: ResolvedExperiment,
  classifier: Classifier,
  splits: SplitSizes,
  options: {
    sharedPrefixLayers?: readonly Layer[];
    /** What a cache may use (the engine's cacheRoom); by default the memory allowance and a disk with room. */
    cacheRoom?: { memory: number; disk: number };
    resident?: number;
    limit?: MemoryLimit;
  } = {},
): TrainingMemory {
  const resident = options.resident ?? process.memoryUsage().rss;
  const graph = compileGraph(classifier.model);
  const variants = imageVariants(config.augmentation);
  const batch = Math.max(1, Math.min(config.dataset.batch_size, splits.train.length));
  const phases: PhaseEstimate[] = [];
  for (const phase of ['feature_extraction', 'fine_tune'] as const) {
    const settings = config.train[phase];
    if (settings.epochs === 0) continue;
    setPhaseTrainable(classifier, phase, config.train.fine_tune.fine_tune_at);
    const split = splitGraph(graph);
    // As the engine plans it: what part of the cache stays in memory (the rest is a file).
    const plan = planFrozenOutputsCache(
      { graph, split },
      {
        ...splits,
        variants,
        prefix: options.sharedPrefixLayers ? cheapestPrefix(graph, options.sharedPrefixLayers) : undefined,
        remainingEpochs: settings.epochs,
      },
      options.cacheRoom ?? { memory: cacheMemoryBytes(), disk: Number.POSITIVE_INFINITY },
    );
    const memory = phaseMemory({
      graph,
      split,
      trainableWeightBytes: weightBytes(classifier.model.trainableWeights),
      optimizer: settings.optimizer,
      frozenOutputsCacheBytes: plan.choice === 'cache' ? plan.memoryBytes : 0,
    });
    const peak = peakOf(memory, resident, batch);
    phases.push({ phase, batch, memory, peak: peak.bytes, moment: peak.moment.name });
  }
  const highest = phases.reduce<PhaseEstimate | undefined>(
    (a, b) => (a === undefined || b.peak > a.peak ? b : a),
    undefined,
  );
  return { resident, phases, highest, limit: options.limit ?? memoryLimit(resident) };
}

/** One line for people: the peak, its phase and moment, and the share of what the process can use. */
function describeTrainingMemory(estimate: TrainingMemory): string {
  const { highest, limit } = estimate;
  if (!highest) return 'memory: no phase trains';
  const share = Math.round((100 * highest.peak) / limit.bytes);
  return `memory: about ${formatBytes(highest.peak)} at its peak (${highest.phase}, ${highest.moment}, batch of ${highest.batch}), ${share}% of the ${formatBytes(limit.bytes)} this process can use (${limit.source})`;
}

/** Above this share of the memory it can use, a run starts with a warning. */
const memoryWarningShare = 0.8;

export interface MemoryVerdict {
  verdict: 'fits' | 'near the limit' | 'does not fit';
  message: string;
}

/**
 * Whether training fits what the process can use: over it, the message names the largest
 * batch_size that fits (or, when none does, what else to lower); above 80%, it says so.
 */
export function judgeTrainingMemory(estimate: TrainingMemory): MemoryVerdict {
  const { highest, limit, resident } = estimate;
  const line = describeTrainingMemory(estimate);
  if (!highest || highest.peak <= memoryWarningShare * limit.bytes) return { verdict: 'fits', message: line };
  if (highest.peak <= limit.bytes)
    return { verdict: 'near the limit', message: `${line}; the machine may start swapping or stop tlx` };
  const fits = Math.min(...estimate.phases.map((phase) => largestBatchWithin(phase.memory, resident, limit.bytes)));
  const remedy =
    fits >= 1
      ? `dataset.batch_size: ${fits} or less fits`
      : `not even a batch of 1 fits: lower dataset.image_size${highest.phase === 'fine_tune' ? ', raise train.fine_tune.fine_tune_at' : ''} or pick a smaller model.base`;
  const override =
    limit.source === 'TLX_MEMORY_BUDGET_MB' ? '' : ' (or set TLX_MEMORY_BUDGET_MB if tlx misjudges what it can use)';
  return {
    verdict: 'does not fit',
    message: `${line}: over it by ${formatBytes(highest.peak - limit.bytes)}; ${remedy}${override}`,
  };
}

/**
 * memory: the estimate, before the first batch, in the log; a run whose training cannot fit
 * is refused (exit 2), one near the limit starts with a warning.
 */
export function estimateRunMemory(context: RunContext, model: RunModel, data: PreparedDataset): TrainingMemory {
  const { feature_extraction: featureExtraction, fine_tune: fineTune } = context.config.train;
  const ownPrefix = keepsFeatureExtractionOutputs(context.config, featureExtraction.epochs)
    ? model.classifier.base.layers.slice(0, fineTune.fine_tune_at)
    : undefined;
  const estimate = estimateTrainingMemory(context.config, model.classifier, data.splits, {
    sharedPrefixLayers: sharedPrefixOf(context, model)?.layers ?? ownPrefix,
    cacheRoom: cacheRoom(frozenOutputsStorage(context)),
  });
  const { verdict, message } = judgeTrainingMemory(estimate);
  if (verdict === 'does not fit') throw new UserError(message);
  const fields = {
    estimated_peak_mb: mebibytes(estimate.highest?.peak ?? estimate.resident),
    limit_mb: mebibytes(estimate.limit.bytes),
    resident_mb: mebibytes(estimate.resident),
  };
  if (verdict === 'near the limit') context.log.warn(fields, message);
  else context.log.info(fields, message);
  return estimate;
}

/** summary.json's `memory`: the estimate beside the process's measured peak (getrusage's maxRSS, in KiB: training included). */
export function memoryRecord(estimate: TrainingMemory): NonNullable<RunSummary['memory']> {
  return {
    resident_mb: mebibytes(estimate.resident),
    estimated_peak_mb: mebibytes(estimate.highest?.peak ?? estimate.resident),
    peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    limit_mb: mebibytes(estimate.limit.bytes),
    limit_source: estimate.limit.source,
  };
}

export function mebibytes(bytes: number): number {
  return Math.round(bytes / 1024 ** 2);
}
