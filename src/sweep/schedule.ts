/**
 * Where trials run. A trial is a self-contained job (resolved config in, run folder out):
 * LocalScheduler runs them in this process; a queue runs them on workers (sweep/queue.ts).
 */
export interface TrialScheduler<Job, Result> {
  /** Runs every job; a job's failure is its own result, never the scheduler's. */
  runAll(jobs: Job[], execute: (job: Job) => Promise<Result>): Promise<Result[]>;
}

/** Runs trials in this process, `parallel` at a time (1 by default: TensorFlow already uses every core). */
export class LocalScheduler<Job, Result> implements TrialScheduler<Job, Result> {
  constructor(
    private readonly parallel = 1,
    /** Polled before each job starts: no new job once it says stop (Ctrl-C). */
    private readonly stopped: () => boolean = () => false,
  ) {}

  async runAll(jobs: Job[], execute: (job: Job) => Promise<Result>): Promise<Result[]> {
    const results = new Array<Result>(jobs.length);
    let next = 0;
    const worker = async () => {
      while (next < jobs.length && !this.stopped()) {
        const index = next++;
        results[index] = await execute(jobs[index]);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(this.parallel, jobs.length)) }, worker));
    return results.filter((result) => result !== undefined);
  }
}
