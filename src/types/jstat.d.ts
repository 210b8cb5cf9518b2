// jstat ships no types (and @types/jstat does not exist): the three distributions tlx uses.
// It is a CommonJS (UMD) module: Node's ESM loader sees only its default export.
declare module 'jstat' {
  const jstat: {
    jStat: {
      normal: { inv(p: number, mean: number, std: number): number };
      studentt: { inv(p: number, degreesOfFreedom: number): number };
      binomial: { cdf(k: number, n: number, p: number): number };
    };
  };
  export default jstat;
}
