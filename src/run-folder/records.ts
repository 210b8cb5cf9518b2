import { z } from 'zod';
import type { EpochRecord as EngineEpochRecord } from '../train/engine.ts';

/**
 * The records of a run folder and a sweep folder, as zod schemas: the TypeScript types are
 * derived from them, and every reader validates what it reads, so a damaged or foreign file
 * is an error naming the file instead of a crash later. ARCHITECTURE.md documents the
 * layout; python/ reads checkpoints by the same rules (CheckpointMeta below).
 */

export const PhaseOutcome = z.object({
  stopped_early: z.boolean(),
  restored_best_epoch: z.number().int().optional(),
  last_epoch: z.number().int(),
});
export type PhaseOutcome = z.infer<typeof PhaseOutcome>;

export const RunStatus = z.enum(['RUNNING', 'FINISHED', 'FAILED', 'KILLED']);
export type RunStatus = z.infer<typeof RunStatus>;

/** run.json: what is needed to resume or understand the run without re-reading the YAML. */
export const RunJson = z.object({
  run_id: z.string(),
  status: RunStatus,
  experiment_file: z.string().optional(),
  base_dir: z.string(),
  config_sha256: z.string(),
  tlx_version: z.string(),
  created: z.string(),
  updated: z.string(),
  /** When the run ended (FINISHED, FAILED, KILLED). */
  ended: z.string().optional(),
  error: z.string().optional(),
  /** The stage that failed: data, model, train, evaluate, export. */
  failed_stage: z.string().optional(),
  /** Sweep trial: the swept keys and values (run names in MLflow show them). */
  trial: z.record(z.string(), z.unknown()).optional(),
  /** Sweep trial: the sweep it belongs to (its MLflow parent run is made from the sweep folder). */
  sweep: z.object({ id: z.string(), dir: z.string() }).optional(),
  /** MLflow system tags fixed when the run starts (user, git commit). */
  tags: z.record(z.string(), z.string()).default({}),
  /** Where the pretrained weights came from (resumed runs restore theirs from checkpoints). */
  weights: z.object({ spec: z.string(), file: z.string().optional(), note: z.string().optional() }).optional(),
  /** How each finished phase ended (early stopping), as its last checkpoint recorded it. */
  phase_outcomes: z.record(z.string(), PhaseOutcome).default({}),
});
export type RunJson = z.infer<typeof RunJson>;

const metricValue = z
  .number()
  .nullable()
  .transform((v) => v ?? Number.NaN);

/** One line of metrics.jsonl: one epoch of one phase (epoch 0: the evaluation before training). */
export const EpochRecord: z.ZodType<EngineEpochRecord> = z.object({
  /** Continuous across phases: feature extraction 1..N, fine-tuning N+1..; 0 is before training. */
  epoch: z.number().int().min(0),
  phase: z.string(),
  loss: metricValue,
  accuracy: metricValue,
  val_loss: metricValue,
  val_accuracy: metricValue,
  learning_rate: z.number(),
  seconds: z.number(),
  /** When the epoch ended (ms since 1970): the timestamp of its metric points everywhere. */
  time: z.number(),
});
export type EpochRecord = EngineEpochRecord;

const SkippedFile = z.object({ file: z.string(), reason: z.string() });

/** dataset.json: what the run trained on. */
export const DatasetJson = z.object({
  name: z.string().optional(),
  classes: z.array(z.string()),
  class_count: z.number().int(),
  counts: z.object({ train: z.number().int(), validation: z.number().int(), test: z.number().int() }),
  skipped: z.number().int(),
  storage: z.string(),
  /** Local folder the class folders were read from (never sent to MLflow as a param). */
  root: z.string(),
  /** The dataset URL with credentials and query removed, or null for a local path. */
  url: z.string().nullable(),
  archive_sha256: z.string().optional(),
  /** sha256 of the archive, or of the sorted file list with sizes for a folder (MLflow dataset digest). */
  digest: z.string().optional(),
});
export type DatasetJson = z.infer<typeof DatasetJson>;

const Tensor = z.object({
  name: z.string(),
  shape: z.array(z.number()),
  dtype: z.string(),
  quantization: z.object({ scale: z.number(), zero_point: z.number() }),
});

/** One exported TFLite model, as summary.json and model-card.json record it. */
/** Which epoch's weights a run evaluated, saved and exported: its last, or its best by validation accuracy (train.restore_best_weights). */
export const FinalWeights = z.object({
  epoch: z.number().int(),
  last_epoch: z.number().int(),
  selected_by: z.enum(['last_epoch', 'best_val_accuracy']),
});
export type FinalWeights = z.infer<typeof FinalWeights>;

/**
 * The export's paired accuracy gate (export/gate.ts). lost: images the trained model got right
 * and the file wrong; gained: the reverse; accuracy_drop: (lost - gained) / images; p_value:
 * exact one-sided McNemar of "the file is no worse"; smallest_detectable_drop: the least drop
 * the test can notice on this many images (every discordant image lost).
 */
export const ExportGate = z.object({
  images: z.number().int(),
  lost: z.number().int(),
  gained: z.number().int(),
  accuracy_drop: z.number(),
  p_value: z.number(),
  max_accuracy_drop: z.number(),
  alpha: z.number(),
  smallest_detectable_drop: z.number(),
  passed: z.boolean(),
});
export type ExportGate = z.infer<typeof ExportGate>;

export const TfliteRecord = z
  .object({
    status: z.enum(['verified', 'failed']),
    path: z.string(),
    quantization: z.string(),
    io_type: z.string(),
    bytes: z.number(),
    input: Tensor,
    output: Tensor,
    labels_file: z.string(),
    labels: z.array(z.string()),
    model_card: z.string(),
    evaluated_on: z.string(),
    accuracy: z.number().optional(),
    /** 95% Wilson interval of `accuracy` on the evaluation split. */
    accuracy_ci95: z.tuple([z.number(), z.number()]).optional(),
    trained_model_accuracy: z.number().optional(),
    accuracy_drop: z.number().optional(),
    /** The paired accuracy gate (export/gate.ts). */
    gate: ExportGate.optional(),
    /** The epoch whose weights are in the file. */
    final_weights: FinalWeights.optional(),
    agreement_with_trained_model: z.number().optional(),
    max_abs_diff_vs_trained_model: z.number().optional(),
    median_latency_ms: z.number().optional(),
    /** What a phone pays: parameters, multiply-accumulates per image (convolutions and dense layers). */
    params: z.number().int().optional(),
    macs_per_image: z.number().int().optional(),
    /** Median ms per image of LiteRT's interpreter with XNNPACK on the exporting machine's CPU: a proxy, not a phone. */
    host_latency_ms: z.object({ threads_1: z.number(), threads_4: z.number() }).optional(),
    /** Peak resident memory LiteRT (XNNPACK, 1 thread) adds to load the file and classify one image, in a fresh process. */
    peak_memory_bytes: z.number().int().optional(),
    accuracy_nearest_resize: z.number().optional(),
    preprocessing: z.string(),
    problems: z.array(z.string()),
  })
  .passthrough();
export type TfliteRecord = z.infer<typeof TfliteRecord>;

export const PhaseSummary = z.object({
  epochs: z.number().int(),
  first_epoch: z.number().int(),
  last_epoch: z.number().int(),
  seconds: z.number(),
  trainable_layers: z.number().int(),
  trainable_variables: z.number().int(),
  stopped_early: z.boolean().optional(),
  restored_best_epoch: z.number().int().optional(),
});
export type PhaseSummary = z.infer<typeof PhaseSummary>;

const nan = z
  .number()
  .nullable()
  .transform((v) => v ?? Number.NaN);

/** summary.json: the machine-readable record of a run (DESIGN.md). */
export const RunSummary = z
  .object({
    run_id: z.string(),
    status: RunStatus,
    name: z.string(),
    config_sha256: z.string(),
    tlx_version: z.string(),
    /** The stage that failed, when status is FAILED (training results are kept). */
    failed_stage: z.string().optional(),
    error: z.string().optional(),
    head: z.object({ kind: z.string(), units: z.number(), loss: z.string() }),
    weights: z.object({ spec: z.string(), file: z.string().optional(), note: z.string().optional() }),
    dataset: z.object({
      root: z.string(),
      url: z.string().nullable().optional(),
      archive_sha256: z.string().optional(),
      classes: z.array(z.string()),
      counts: z.record(z.string(), z.number()),
      storage: z.string(),
      skipped: z.object({ count: z.number(), files: z.array(SkippedFile) }),
    }),
    phases: z.record(z.string(), PhaseSummary),
    final_weights: FinalWeights.optional(),
    metrics: z.object({
      initial: z.object({ val_loss: nan, val_accuracy: nan }).optional(),
      final: z
        .object({
          val_loss: nan,
          val_accuracy: nan,
          test_loss: nan,
          test_accuracy: nan,
          /** 95% Wilson intervals of the accuracies, on the split's image count. */
          val_accuracy_ci95: z.tuple([z.number(), z.number()]).optional(),
          test_accuracy_ci95: z.tuple([z.number(), z.number()]).optional(),
        })
        .optional(),
      best_val_accuracy: z.number().optional(),
    }),
    test_report: z
      .array(
        z.object({ class: z.string(), precision: z.number(), recall: z.number(), f1: z.number(), support: z.number() }),
      )
      .optional(),
    confusion_matrix: z.array(z.array(z.number())).optional(),
    artifacts: z.record(z.string(), z.string()),
    seconds: z.number(),
    finished_at: z.number(),
    /**
     * Memory in MiB: the process's RSS when training was estimated (before its first batch),
     * the peak estimated then, the process's measured peak, and the limit it was held to.
     */
    memory: z
      .object({
        resident_mb: z.number(),
        estimated_peak_mb: z.number(),
        peak_rss_mb: z.number(),
        limit_mb: z.number(),
        limit_source: z.string(),
      })
      .optional(),
    export: z
      .object({
        tflite: TfliteRecord.optional(),
        tflite_modes: z.record(z.string(), TfliteRecord).optional(),
      })
      .optional(),
  })
  .passthrough();
export type RunSummary = z.infer<typeof RunSummary>;

/** Something a server refused for good (a 4xx other than auth): recorded, never retried. */
export const Refusal = z.object({
  kind: z.string(),
  item: z.string(),
  status: z.number().optional(),
  message: z.string(),
  at: z.string(),
});
export type Refusal = z.infer<typeof Refusal>;

/** What one MLflow server has of a run (or of a sweep's parent run). */
export const ServerState = z.object({
  experiment_id: z.string(),
  run_id: z.string(),
  /** sha256 of the params last sent (params are immutable in MLflow: a change is refused). */
  params_sent: z.string().optional(),
  /** Lines of metrics.jsonl sent, in order. */
  metric_lines: z.number().int().default(0),
  /** sha256 of the final metrics last sent (summary.json and export modes). */
  final_metrics_sent: z.string().optional(),
  /** Artifact path -> size:mtime of the version uploaded. */
  artifacts: z.record(z.string(), z.string()).default({}),
  /** Dataset input logged (runs/log-inputs), by digest. */
  dataset_input: z.string().optional(),
  /** MLflow 3 logged model of the exported TFLite file, and what it was made from. */
  logged_model: z.object({ model_id: z.string(), source: z.string(), finalized: z.boolean() }).optional(),
  /** Model Registry version created from the logged model. */
  model_version: z.object({ name: z.string(), version: z.string(), source: z.string() }).optional(),
  status: z.string().optional(),
  synced: z.boolean().default(false),
  last_error: z.string().optional(),
  refused: z.array(Refusal).default([]),
  updated: z.string(),
});
export type ServerState = z.infer<typeof ServerState>;

/** mlflow.json: per tracking server (URL without credentials), what was sent. */
export const MlflowJson = z.object({
  servers: z.record(z.string(), ServerState).default({}),
  /** Servers that failed before a run could even be created there. */
  pending: z
    .record(
      z.string(),
      z.object({ synced: z.literal(false).default(false), last_error: z.string(), updated: z.string() }),
    )
    .default({}),
});
export type MlflowJson = z.infer<typeof MlflowJson>;

const ManifestEntry = z.object({ name: z.string(), shape: z.array(z.number()), dtype: z.string() }).passthrough();

/** checkpoints/<name>/checkpoint.json; weights.bin and optimizer.bin hold the float32 values in this order. */
export const CheckpointMeta = z.object({
  /** The last completed epoch whose weights these are. */
  epoch: z.number().int(),
  phase: z.string(),
  /** The phase ended here (all its epochs, or early stopping with the best weights restored). */
  phase_complete: z.boolean().default(false),
  /** With phase_complete: how the phase ended. */
  outcome: PhaseOutcome.optional(),
  record: EpochRecord.optional(),
  /** State of callbacks that outlives an epoch (early stopping's best value, wait count). */
  callbacks: z.record(z.string(), z.unknown()).default({}),
  /** Variables by Keras path ("<layer>/<variable>"), in weights.bin order. */
  weights: z.array(ManifestEntry),
  optimizer: z.array(ManifestEntry),
});
export type CheckpointMeta = z.infer<typeof CheckpointMeta>;

/** model/classifier.json: what rebuilding the trained classifier needs. */
export const ClassifierJson = z
  .object({
    base: z.string(),
    alpha: z.number(),
    minimalistic: z.boolean().optional(),
    imageSize: z.tuple([z.number(), z.number()]),
    classCount: z.number().int(),
    dropout: z.number(),
    seed: z.number(),
    head: z.string(),
    units: z.number().int(),
  })
  .passthrough();
export type ClassifierJson = z.infer<typeof ClassifierJson>;

/** A sweep's plan.json: everything needed to resume it, values kept as values. */
export const SweepPlan = z.object({
  sweep_id: z.string(),
  experiment_file: z.string(),
  overrides: z.array(z.string()),
  /** Lists, and (random search) continuous ranges {min, max, log, integer}. */
  grid: z.record(
    z.string(),
    z.union([
      z.array(z.unknown()),
      z.object({ min: z.number(), max: z.number(), log: z.boolean().optional(), integer: z.boolean().optional() }),
    ]),
  ),
  max_trials: z.number().int().nullable().default(null),
  /** How the trials came from the grid (absent in plans written before random search: a grid). */
  search: z
    .union([
      z.object({ method: z.literal('grid') }),
      z.object({ method: z.literal('random'), trials: z.number().int(), seed: z.number().int() }),
    ])
    .optional(),
  metric: z.string(),
  goal: z.enum(['max', 'min']),
  export: z.enum(['all', 'best', 'none']).default('all'),
  trials: z.array(
    z.object({
      trial: z.number().int(),
      assignments: z.record(z.string(), z.unknown()),
      config_sha256: z.string(),
      group: z.string(),
    }),
  ),
});
export type SweepPlan = z.infer<typeof SweepPlan>;

export const TrialState = z.object({
  trial: z.number().int(),
  assignments: z.record(z.string(), z.unknown()),
  config_sha256: z.string(),
  status: z.enum(['pending', 'running', 'finished', 'failed', 'killed']),
  run_dir: z.string().optional(),
  shared_feature_extraction: z.boolean().optional(),
  minutes: z.number().optional(),
  error: z.string().optional(),
  /** A queued trial's row as its worker reported it (its run folder is on the worker). */
  result: z.record(z.string(), z.unknown()).optional(),
});
export type TrialState = z.infer<typeof TrialState>;
export const TrialStates = z.array(TrialState);
