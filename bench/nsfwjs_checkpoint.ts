/**
 * Writes the MobileNetV2 base with the nsfwjs pretrained weights (what `weights: npm:nsfwjs`
 * loads) as a tlx checkpoint folder, so that bench/keras_finetune.py starts from the same
 * weights as tlx.
 *
 *   npx tsx bench/nsfwjs_checkpoint.ts OUT_DIR SIZE
 */
import { mobileNetV2 } from '../src/models/mobilenet_v2.ts';
import { assignWeights, readNsfwjsMobileNetV2 } from '../src/models/weights.ts';
import { writeCheckpoint } from '../src/run-folder/checkpoints.ts';

const [out, size] = process.argv.slice(2);
const base = mobileNetV2({ alpha: 1.0, inputShape: [Number(size), Number(size), 3] });
assignWeights(base, await readNsfwjsMobileNetV2(), { requireAll: true, what: 'nsfwjs' });
await writeCheckpoint(out, base, undefined, { epoch: 0, phase: 'pretrained' });
