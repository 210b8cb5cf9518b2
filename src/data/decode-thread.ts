import { parentPort } from 'node:worker_threads';
import { decodeToBytes } from './images.ts';
import { claimNext, finish, type DecodeJob } from './decode-pool.ts';
import fs from 'node:fs';

/** A decode thread: claims images of a job one at a time and writes their pixels in place. */
parentPort!.on('message', (job: DecodeJob) => {
  const perImage = job.size[0] * job.size[1] * 3;
  const pixels = new Uint8Array(job.pixels);
  for (let index = claimNext(job); index >= 0; index = claimNext(job)) {
    let ok = true;
    try {
      pixels.set(decodeToBytes(fs.readFileSync(job.files[index]), job.size, job.maxPixels), index * perImage);
    } catch {
      ok = false;
    }
    finish(job, index, ok);
  }
});

parentPort!.postMessage('ready');
