/* Generated from schemas/experiment.schema.json by `npm run gen:types`. Do not edit. */

/**
 * How points outside the image are filled. Default: reflect (as Keras).
 */
export type FillMode = 'reflect' | 'wrap' | 'constant' | 'nearest';
/**
 * Interpolation used by the transform. Default: bilinear.
 */
export type Interpolation = 'bilinear' | 'nearest';

/**
 * A tlx experiment: one image-classification transfer-learning run, from data to a quantized TFLite model.
 */
export interface Experiment {
  /**
   * Editor hint; ignored by tlx.
   */
  $schema?: string;
  /**
   * Path of another experiment file (relative to this one) whose keys this file overrides.
   */
  extends?: string;
  /**
   * Experiment name: letters, digits, '.', '_' or '-'. Used in run ids and as the MLflow run name.
   */
  name: string;
  /**
   * Seed for splits, shuffling, augmentation draws and weight initialisation.
   */
  seed?: number;
  dataset: Dataset;
  /**
   * Random transformations applied to training batches only, in order (Keras preprocessing-layer semantics).
   */
  augmentation?: AugmentationOp[];
  model?: Model;
  train?: Train;
  export?: Export;
  tracking?: Tracking;
  sweep?: Sweep;
}
/**
 * Where the images come from and how they are split. Layout: one sub-folder per class.
 */
export interface Dataset {
  /**
   * http(s) or file URL of a .zip, .tar, .tar.gz or .tgz archive, or mlflow-artifacts:/<path> in the artifact store of $MLFLOW_TRACKING_URI (where a queued sweep puts a local dataset). Downloaded once into the cache.
   */
  url?: string;
  /**
   * A local folder (relative to the experiment file) holding the dataset.
   */
  path?: string;
  /**
   * Expected SHA-256 of the downloaded archive (lower-case hex).
   */
  sha256?: string;
  /**
   * Folder inside the archive or path that holds the dataset (e.g. cats_and_dogs_filtered). Default: the single top-level folder of an archive, if there is one.
   */
  subdir?: string;
  /**
   * Training folder inside the dataset (class sub-folders). Needs validation_dir.
   */
  train_dir?: string;
  /**
   * Validation folder inside the dataset (class sub-folders).
   */
  validation_dir?: string;
  /**
   * Without train_dir/validation_dir: the fraction of images (per seed) held out for validation.
   */
  validation_split?: number;
  /**
   * Fraction of the validation batches taken as the test split (the tutorial takes 1/5).
   */
  test_fraction_of_validation?: number;
  /**
   * [height, width] in pixels that images are resized to (bilinear).
   *
   * @minItems 2
   * @maxItems 2
   */
  image_size?: [number, number];
  /**
   * Images per batch.
   */
  batch_size?: number;
  /**
   * Use at most this many images per class and split (a seeded sample): for quick, scaled-down runs.
   */
  max_images_per_class?: number;
  /**
   * What to do with files that are not decodable images: skip them (counted and recorded) or fail.
   */
  on_bad_file?: 'skip' | 'fail';
  /**
   * Refuse a dataset download larger than this many bytes (20 GiB by default), before the disk fills: by Content-Length when the server sends it, else counted while streaming.
   */
  max_download_bytes?: number;
  /**
   * Refuse an archive whose unpacked size is over this many bytes (20 GiB by default).
   */
  max_extracted_bytes?: number;
  /**
   * Images whose header announces more pixels (width x height) than this are not decoded: skipped and recorded, or refused with on_bad_file: fail.
   */
  max_image_pixels?: number;
}
/**
 * One augmentation step: an object with exactly one key naming the Keras preprocessing layer.
 */
export interface AugmentationOp {
  /**
   * Like keras.layers.RandomFlip(mode): each image is flipped with probability 1/2; horizontal_and_vertical flips both axes together on the same draw, as Keras 3 does.
   */
  random_flip?: 'horizontal' | 'vertical' | 'horizontal_and_vertical';
  /**
   * Like keras.layers.RandomRotation: a factor (fraction of a full turn, 0.2 = up to ±72°) or an object.
   */
  random_rotation?:
    | number
    | {
        factor: number;
        fill_mode?: FillMode;
        interpolation?: Interpolation;
      };
  /**
   * Like keras.layers.RandomZoom: a height factor (as in Keras, negative zooms in, positive zooms out; 0.2 = up to 20%) or an object.
   */
  random_zoom?:
    | number
    | {
        height_factor: number;
        width_factor?: number;
        fill_mode?: FillMode;
        interpolation?: Interpolation;
      };
  /**
   * Like keras.layers.RandomTranslation: shifts as fractions of height and width.
   */
  random_translation?: {
    height_factor: number;
    width_factor: number;
    fill_mode?: FillMode;
    interpolation?: Interpolation;
  };
  /**
   * Like keras.layers.RandomContrast(factor): (x - mean) x c + mean per image and channel, with c drawn in [1, 1 + factor] (Keras 3 clips the lower bound of a single factor at 0, so contrast is only raised; its docstring says [1 - factor, 1 + factor]).
   */
  random_contrast?: number;
  /**
   * Like keras.layers.RandomBrightness(factor): adds a random delta in [-factor, factor] x 255.
   */
  random_brightness?: number;
}
/**
 * The pretrained base and the new classification head.
 */
export interface Model {
  /**
   * Pretrained convolutional base (include_top off), built layer for layer as keras.applications builds it: MobileNetV2 (154 layers), MobileNetV3Small (157; 103 minimalistic), MobileNetV3Large (187; 139 minimalistic), EfficientNetB0 (238). `tlx model <base>` lists the layers.
   */
  base?: 'mobilenet_v2' | 'mobilenet_v3_small' | 'mobilenet_v3_large' | 'efficientnet_b0';
  /**
   * Width multiplier of the MobileNets (Keras's alpha). Keras's ImageNet weights exist for MobileNetV2 at every listed value and for MobileNetV3 at 0.75 and 1.0 (1.0 only when minimalistic). EfficientNet-B0 has none: leave it at 1.0.
   */
  alpha?: 0.35 | 0.5 | 0.75 | 1 | 1.3 | 1.4;
  /**
   * MobileNetV3 only: Keras's minimalistic variant (3x3 kernels, ReLU, no squeeze-and-excite), faster on phones, fewer layers.
   */
  minimalistic?: boolean;
  /**
   * 'imagenet' (Keras application weights, downloaded once and checked against Keras's md5 where Keras publishes one), 'none' (random, seeded), 'npm:nsfwjs' (the MobileNetV2 shipped inside the nsfwjs npm package, offline; mobilenet_v2 only), or a path/URL to a Keras .h5 or a tfjs model.json.
   */
  weights?: string;
  /**
   * Dropout rate before the dense head.
   */
  dropout?: number;
}
/**
 * The two phases: feature extraction (base frozen) then fine-tuning (base from fine_tune_at trainable).
 */
export interface Train {
  feature_extraction?: FeatureExtractionPhase;
  fine_tune?: FineTunePhase;
  /**
   * After training, put back the weights of the epoch with the best validation accuracy (the earliest of equal ones), as keras.callbacks.EarlyStopping(monitor='val_accuracy', restore_best_weights=True) over the whole run; the evaluation and the export use them. Selected on validation, never on test.
   */
  restore_best_weights?: boolean;
  /**
   * Label smoothing of the cross-entropy loss.
   */
  label_smoothing?: number;
  /**
   * 'auto' (inverse class frequency, as sklearn's 'balanced'), 'none', or an object mapping class name to weight.
   */
  class_weight?:
    | ('auto' | 'none')
    | {
        [k: string]: number;
      };
}
/**
 * Phase 1: the base is frozen (BatchNorm in inference mode); only the head trains.
 */
export interface FeatureExtractionPhase {
  /**
   * Epochs of this phase (0 skips it).
   */
  epochs?: number;
  /**
   * Optimizer of this phase; a phase gets a fresh optimizer.
   */
  optimizer?: Optimizer;
  schedule?: Schedule;
  early_stopping?: EarlyStopping;
}
export interface Optimizer {
  /**
   * Optimizer (Keras defaults for its other settings).
   */
  name: 'adam' | 'rmsprop' | 'sgd';
  /**
   * Learning rate (> 0).
   */
  learning_rate: number;
  /**
   * Momentum for sgd and rmsprop (default 0).
   */
  momentum?: number;
}
/**
 * Learning-rate schedule over the phase's epochs.
 */
export interface Schedule {
  name?: 'constant' | 'cosine';
  /**
   * Linear warm-up from 0 over this many epochs.
   */
  warmup_epochs?: number;
  /**
   * Floor of the cosine schedule.
   */
  min_learning_rate?: number;
}
/**
 * Stop the phase when the monitored metric stops improving, restoring the best weights (like keras.callbacks.EarlyStopping(restore_best_weights=True)).
 */
export interface EarlyStopping {
  monitor?: 'val_loss' | 'val_accuracy' | 'loss' | 'accuracy';
  patience?: number;
  min_delta?: number;
  restore_best_weights?: boolean;
}
/**
 * Phase 2: base layers from fine_tune_at on are trainable; BatchNorm stays in inference mode.
 */
export interface FineTunePhase {
  /**
   * Index of the first base layer to unfreeze, in Keras layer order (the tutorial: 100 of MobileNetV2's 154).
   */
  fine_tune_at?: number;
  /**
   * Epochs of this phase (0 skips it); epoch numbers continue after phase 1.
   */
  epochs?: number;
  /**
   * Optimizer of this phase; a phase gets a fresh optimizer.
   */
  optimizer?: Optimizer;
  schedule?: Schedule;
  early_stopping?: EarlyStopping;
}
export interface Export {
  /**
   * Export a TFLite model after training, verified by running it.
   */
  tflite?: {
    /**
     * none = float32; dynamic = int8 weights; float16 = float16 weights; int8 = full integer (representative dataset).
     */
    quantization?: 'none' | 'dynamic' | 'float16' | 'int8';
    /**
     * Input and output type of a full-integer (int8) model; uint8 suits the Android Task Library.
     */
    io_type?: 'uint8' | 'int8';
    /**
     * Training images used to calibrate full-integer quantization (100, as in TensorFlow's post-training quantization guide: on the quickstart 300 gave the same accuracy and took 3 s longer).
     */
    representative_images?: number;
    /**
     * Largest accepted test-accuracy drop of the .tflite against the trained model (0.02 = 2 points).
     */
    max_accuracy_drop?: number;
    /**
     * TFLite metadata embedded in the model (read by MediaPipe Tasks and the TFLite Task Library). Labels, normalization and the version (tlx version + run id) are always embedded; these fields are optional.
     */
    metadata?: {
      /**
       * Model name (default: the experiment's name).
       */
      name?: string;
      /**
       * What the model does (default: the base, the classes and the image size).
       */
      description?: string;
      /**
       * Author, embedded as is.
       */
      author?: string;
      /**
       * License of the model, embedded as is.
       */
      license?: string;
    };
  };
}
export interface Tracking {
  mlflow?: {
    /**
     * MLflow experiment name (default: the experiment's name).
     */
    experiment?: string;
    /**
     * MLflow server URL; MLFLOW_TRACKING_URI is used when unset.
     */
    tracking_uri?: string;
    /**
     * Register each run's exported TFLite model as a new version of this Model Registry model (with its test accuracy, quantization and size as tags); a sweep registers only its best trial.
     */
    register_model?: string;
  };
}
/**
 * The trials of `tlx sweep`: every combination of a grid, or `trials` random draws from it (method: random); the metric that ranks them and, optionally, the phone's budget they must fit.
 */
export interface Sweep {
  /**
   * grid: every combination of the grid's values (--max-trials keeps the first n). random: `trials` draws, one value per key (uniform over lists and ranges; continuous {min, max, log}), seeded by sweep.seed, never the same trial twice; a rerun draws the same trials.
   */
  method?: 'grid' | 'random';
  /**
   * method: random: how many trials to draw (required there).
   */
  trials?: number;
  /**
   * method: random: the seed of the draws (default: the experiment's seed).
   */
  seed?: number;
  /**
   * Dotted key (e.g. train.fine_tune.fine_tune_at) to a list of values, a range {from, to, step} (to inclusive), or (method: random only) a continuous range {min, max, log} drawn uniformly, or log-uniformly with log: true (for learning rates).
   */
  grid: {
    [k: string]:
      | [unknown, ...unknown[]]
      | {
          from: number;
          to: number;
          step: number;
        }
      | {
          min: number;
          max: number;
          /**
           * Draw log-uniformly (min > 0): each decade equally often, as for learning rates. Default false.
           */
          log?: boolean;
          /**
           * Round the draw to an integer (e.g. fine_tune_at). Default false.
           */
          integer?: boolean;
        };
  };
  metric?: 'val_accuracy' | 'val_loss' | 'test_accuracy' | 'test_loss' | 'tflite_accuracy';
  goal?: 'max' | 'min';
  /**
   * Which trials export TFLite (when the experiment exports): all of them, only the best one (after every trial finished; the results say which), or none.
   */
  export?: 'all' | 'best' | 'none';
  /**
   * The phone's budget. Each trial is within or over it; the best trial is the best within budget (none when no trial fits: the report says so). Needs export.tflite and sweep.export best or all: one trial per architecture (base, alpha, image size, quantization) is exported to measure what its .tflite costs, and the trials that differ only in training share that measurement.
   */
  constraints?: {
    /**
     * Largest .tflite file, in bytes.
     */
    max_bytes?: number;
    /**
     * Most parameters.
     */
    max_params?: number;
    /**
     * Most multiply-accumulates per image (they carry across devices).
     */
    max_macs?: number;
    /**
     * Slowest median host latency (LiteRT with XNNPACK on this CPU, a proxy for a phone), in ms, at latency_threads.
     */
    max_host_latency_ms?: number;
    /**
     * Which host latency max_host_latency_ms and the Pareto plot use: 1 or 4 threads.
     */
    latency_threads?: 1 | 4;
    /**
     * Most peak memory the interpreter adds to load the model and classify one image.
     */
    max_peak_memory_bytes?: number;
  };
}
