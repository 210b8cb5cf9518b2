import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';

/**
 * Seeded randomness for everything tlx draws (splits, shuffles, augmentation, dropout
 * masks), so the same seed and config give the same run. Streams are derived from the
 * seed and a purpose label, so adding draws in one place does not shift another.
 */
export class Random {
  private readonly generator;

  constructor(seed: number, ...stream: (string | number)[]) {
    this.generator = xoroshiro128plus(mixSeed(seed, stream));
  }

  /** Uniform in [0, 1). */
  next(): number {
    return uniformFloat64(this.generator);
  }

  /** Uniform in [low, high). */
  uniform(low: number, high: number): number {
    return low + (high - low) * this.next();
  }

  /** A seed for a TensorFlow random op, in [1, 2^31 - 1). */
  opSeed(): number {
    return Math.floor(this.next() * 2147483646) + 1;
  }

  /** A Fisher-Yates shuffled copy. */
  shuffle<T>(items: readonly T[]): T[] {
    const result = [...items];
    for (let i = result.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [result[i], result[j]] = [result[j], result[i]];
    }
    return result;
  }

  /** A permutation of 0..n-1. */
  permutation(n: number): number[] {
    return this.shuffle(Array.from({ length: n }, (_, i) => i));
  }
}

/** FNV-1a over the seed and the stream labels: a stable 32-bit seed per purpose. */
function mixSeed(seed: number, stream: (string | number)[]): number {
  let hash = 0x811c9dc5 ^ (seed >>> 0);
  for (const char of stream.join('\u0000')) {
    hash ^= char.charCodeAt(0);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash | 0;
}
