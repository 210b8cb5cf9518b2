import type { Optimizer as TfOptimizer } from '@tensorflow/tfjs-node';
import type { Optimizer as OptimizerConfig, Schedule } from '../config/resolved.ts';
import { setOptimizerLearningRate } from '../tfjs/internals.ts';
import { flatAdam, flatRmsprop, flatSgd } from './flat-optimizer.ts';

/** Keras's default epsilon for Adam and RMSprop. */
const kerasEpsilon = 1e-7;

/**
 * A fresh optimizer for a phase, with Keras's defaults for what the config leaves out: tfjs's
 * update rules, run over all the phase's variables at once (flat-optimizer.ts).
 */
export function createOptimizer(config: OptimizerConfig): TfOptimizer {
  switch (config.name) {
    case 'adam':
      return flatAdam(config.learning_rate, 0.9, 0.999, kerasEpsilon);
    case 'rmsprop':
      return flatRmsprop(config.learning_rate, 0.9, config.momentum ?? 0, kerasEpsilon);
    case 'sgd':
      return flatSgd(config.learning_rate, config.momentum || undefined);
  }
}

/**
 * Learning rate of an epoch of a phase (0-based within the phase), set once per epoch.
 * Warm-up rises linearly to the base rate, reaching base x (e + 1) / (warmup + 1) at epoch e;
 * cosine then decays from the base rate to min_learning_rate over the remaining epochs.
 * This is keras.optimizers.schedules.CosineDecay(initial_learning_rate=0,
 * warmup_target=base, warmup_steps=warmup + 1, decay_steps=epochs - warmup,
 * alpha=min/base) evaluated at step e + 1 (one step per epoch); the tests compare with it.
 */
export function learningRateAt(base: number, schedule: Schedule, epochInPhase: number, phaseEpochs: number): number {
  const warmup = Math.min(schedule.warmup_epochs, phaseEpochs);
  if (epochInPhase < warmup) return (base * (epochInPhase + 1)) / (warmup + 1);
  if (schedule.name === 'constant') return base;
  const span = Math.max(1, phaseEpochs - warmup);
  const progress = Math.min(1, (epochInPhase - warmup) / span);
  return schedule.min_learning_rate + 0.5 * (base - schedule.min_learning_rate) * (1 + Math.cos(Math.PI * progress));
}

export function setLearningRate(optimizer: TfOptimizer, learningRate: number): void {
  setOptimizerLearningRate(optimizer, learningRate);
}
