import type { Tensor4D } from '@tensorflow/tfjs-node';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { UserError, errorMessage, someOf } from '../core/errors.ts';
import { redactUrl } from '../core/redact.ts';
import type { Random } from '../core/random.ts';
import { augmentBatch } from '../data/augment.ts';
import { prepareDataset, splitCounts, type PreparedDataset } from '../data/dataset.ts';
import { augmentationPreviewPng, sampleGridPng } from '../data/pictures.ts';
import { buildClassifier, type Classifier } from '../models/classifier.ts';
import { assignWeights, loadPretrainedWeights, type WeightsSource } from '../models/weights.ts';
import { balancedClassWeights, type Objective } from '../train/objective.ts';
import type { ResumePoint } from './resume.ts';
import type { RunContext } from './run.ts';

/** The data and model stages of a run. */

/** data: decoded splits, recorded in dataset.json and labels.txt, with the data pictures. */
export async function prepareData(context: RunContext): Promise<PreparedDataset> {
  const { folder, config, log, options, run } = context;
  context.progress?.stage('decoding data');
  const known = folder.readDataset()?.archive_sha256;
  const provided = options.services?.dataset;
  const dataset = provided
    ? await provided(config, run.base_dir, known)
    : await prepareDataset(config, {
        baseDir: run.base_dir,
        cacheDir: options.cacheDir,
        log,
        knownArchiveSha256: known,
      });
  const counts = splitCounts(dataset);
  log.info(
    { classes: dataset.classNames, counts, skipped: dataset.skipped.length },
    `dataset: ${dataset.classNames.length} classes, ${counts.train} train / ${counts.validation} validation / ${counts.test} test images`,
  );
  folder.writeLabels(dataset.classNames);
  folder.writeDataset({
    name: config.name,
    classes: dataset.classNames,
    class_count: dataset.classNames.length,
    counts,
    skipped: dataset.skipped.length,
    storage: dataset.storage,
    root: dataset.source.root,
    url: dataset.source.url ?? null,
    ...(dataset.source.archiveSha256 ? { archive_sha256: dataset.source.archiveSha256 } : {}),
    digest: dataset.digest,
  });
  context.progress?.stage(undefined);
  await context.tracking?.update();
  if (!folder.hasPlot('samples.png')) {
    try {
      folder.writePlot('samples.png', await sampleGridPng(dataset.splits.train, dataset.classNames, config.seed));
      const augmented = await augmentationPreviewPng(dataset.splits.train, config.augmentation, config.seed);
      folder.writePlot('augmentation.png', augmented);
    } catch (error) {
      log.warn({ error: errorMessage(error) }, 'could not draw the data pictures');
    }
  }
  return dataset;
}

export interface RunModel {
  classifier: Classifier;
  weights: WeightsSource;
  objective: Objective;
  augment: (images: Tensor4D, random: Random) => Tensor4D;
}

function objectiveFor(config: ResolvedExperiment, classifier: Classifier, dataset: PreparedDataset): Objective {
  const classCount = dataset.classNames.length;
  const weights = config.train.class_weight;
  let classWeights: number[] | undefined;
  if (weights === 'auto') classWeights = balancedClassWeights(dataset.splits.train.labels, classCount);
  else if (typeof weights === 'object') {
    const unknown = Object.keys(weights).filter((name) => !dataset.classNames.includes(name));
    if (unknown.length)
      throw new UserError(
        `train.class_weight: unknown class(es) ${unknown.join(', ')}; classes are ${someOf(dataset.classNames)}`,
      );
    classWeights = dataset.classNames.map((name) => weights[name] ?? 1);
  }
  return { head: classifier.head, classCount, labelSmoothing: config.train.label_smoothing, classWeights };
}

/** model: the classifier with its pretrained base weights, its objective and augmentation. */
export async function buildModel(context: RunContext, dataset: PreparedDataset, point: ResumePoint): Promise<RunModel> {
  const { config, log, options, run } = context;
  const imageSize = config.dataset.image_size as [number, number];
  const classifier = buildClassifier({
    base: config.model.base,
    alpha: config.model.alpha,
    minimalistic: config.model.minimalistic,
    imageSize,
    classCount: dataset.classNames.length,
    dropout: config.model.dropout,
    seed: config.seed,
  });
  try {
    // A resumed run's weights come from its checkpoint: the pretrained ones are not needed again.
    const { weights, source } = point.checkpoint
      ? { weights: undefined, source: context.run.weights ?? { spec: redactUrl(config.model.weights) } }
      : await loadPretrainedWeights(config.model.weights, {
          baseDir: run.base_dir,
          cacheDir: options.cacheDir,
          model: config.model,
          imageSize,
          log,
        });
    if (!point.checkpoint) context.setRun({ weights: source });
    if (weights) {
      const { assigned } = assignWeights(classifier.base, weights, {
        requireAll: true,
        what: `model.weights (${source.spec})`,
      });
      log.info({ assigned, source: source.spec }, `loaded ${assigned} pretrained base weights`);
    }
    const ops = config.augmentation;
    const augment =
      ops.length > 0
        ? (images: Tensor4D, random: Random) => augmentBatch(images, ops, random)
        : (images: Tensor4D) => images.clone();
    return { classifier, weights: source, objective: objectiveFor(config, classifier, dataset), augment };
  } catch (error) {
    classifier.model.dispose();
    throw error;
  }
}
