import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { accuracyInterval, fewestLossesDetectable, mcnemarWorsePValue, wilsonInterval } from '../../src/core/stats.ts';
import { judgeExport } from '../../src/export/gate.ts';
import { spreadOf, verdict, welchInterval } from '../../bench/seeds.ts';

const close = (actual: number, expected: number, digits = 4) =>
  assert.ok(Math.abs(actual - expected) < 10 ** -digits, `${actual} != ${expected}`);

describe('Wilson interval (95%)', () => {
  test('8 of 10: [0.4902, 0.9433] (by hand: centre 0.7167, half-width 0.2266)', () => {
    const { low, high } = wilsonInterval(8, 10);
    close(low, 0.4902);
    close(high, 0.9433);
  });

  test('0 of 10 and 10 of 10 stay inside [0, 1] with a width (0.2775)', () => {
    const none = wilsonInterval(0, 10);
    close(none.low, 0);
    close(none.high, 0.2775);
    const all = wilsonInterval(10, 10);
    close(all.low, 0.7225);
    close(all.high, 1);
  });

  test('an accuracy on 96 images: 75/96 = 0.78125 -> [0.6886, 0.8522]', () => {
    const [low, high] = accuracyInterval(75 / 96, 96);
    close(low, 0.6886);
    close(high, 0.8522);
  });
});

describe('exact one-sided McNemar', () => {
  test('p is the binomial tail of the losses among the discordant images', () => {
    close(mcnemarWorsePValue(5, 0), 1 / 32, 9);
    close(mcnemarWorsePValue(2, 0), 1 / 4, 9);
    close(mcnemarWorsePValue(6, 1), 8 / 128, 9); // C(7,6) + C(7,7) of 2^7
    assert.equal(mcnemarWorsePValue(0, 3), 1);
    assert.equal(mcnemarWorsePValue(0, 0), 1);
  });

  test('five images lost and none gained is the fewest that reaches p < 0.05', () => {
    assert.equal(fewestLossesDetectable(0.05), 5);
    assert.equal(fewestLossesDetectable(0.01), 7);
  });
});

describe('the export gate', () => {
  const truth = new Array(96).fill(0);
  const trained = new Array(96).fill(0);
  const exportedLosing = (lost: number, gained: number) => {
    const exported = [...trained];
    const trainedWith = [...trained];
    for (let i = 0; i < lost; i++) exported[i] = 1;
    for (let i = 0; i < gained; i++) trainedWith[95 - i] = 1;
    return { trained: trainedWith, exported };
  };

  test('two images of 96 lost (2.1 points > 2.0) is not believed: the file passes', () => {
    const { trained: t, exported } = exportedLosing(2, 0);
    const gate = judgeExport(truth, t, exported, 0.02);
    assert.equal(gate.lost, 2);
    close(gate.accuracy_drop, 2 / 96, 9);
    close(gate.p_value, 0.25, 9);
    assert.equal(gate.passed, true);
    close(gate.smallest_detectable_drop, 5 / 96, 9);
  });

  test('eight lost and one gained of 96 (7.3 points, p = 10/512) fails', () => {
    const { trained: t, exported } = exportedLosing(8, 1);
    const gate = judgeExport(truth, t, exported, 0.02);
    assert.deepEqual([gate.lost, gate.gained], [8, 1]);
    close(gate.accuracy_drop, 7 / 96, 9);
    close(gate.p_value, 10 / 512, 9);
    assert.equal(gate.passed, false);
  });

  test("a significant drop within max_accuracy_drop passes (the limit is the user's)", () => {
    const many = new Array(1000).fill(0);
    const exported = [...many];
    for (let i = 0; i < 15; i++) exported[i] = 1;
    const gate = judgeExport(many, many, exported, 0.02);
    assert.ok(gate.p_value < 0.001);
    assert.equal(gate.passed, true);
    assert.equal(judgeExport(many, many, exported, 0.01).passed, false);
  });
});

describe("the bench's comparison over seeds (Welch)", () => {
  test('two samples of five: difference, interval and degrees of freedom by hand', () => {
    // a: mean 0.80, variance 0.00005; b: mean 0.78, variance 0.0002. se^2 = 0.00001 + 0.00004;
    // df = (0.00005)^2 / ((0.00001)^2/4 + (0.00004)^2/4) = 5.882; t(0.975, 5.882) = 2.4563.
    const a = spreadOf([0.79, 0.8, 0.81, 0.8, 0.8]);
    const b = spreadOf([0.76, 0.78, 0.8, 0.78, 0.78]);
    close(a.mean, 0.8, 9);
    close(a.sd, Math.sqrt(0.0002 / 4), 9);
    const interval = welchInterval(a, b);
    close(interval.difference, 0.02, 9);
    close(interval.degreesOfFreedom, 5.8824, 3);
    close(interval.high - interval.difference, 2.4563 * Math.sqrt(0.00005 / 5 + 0.0002 / 5), 3);
    assert.equal(verdict(interval, 0.01), 'cannot tell');
    assert.equal(verdict(interval, 0.06), 'within the goal');
    assert.equal(
      verdict(welchInterval(spreadOf([0.9, 0.91, 0.9]), spreadOf([0.8, 0.81, 0.8])), 0.01),
      'beyond the goal',
    );
  });
});
