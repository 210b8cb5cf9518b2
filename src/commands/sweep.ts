import type { Logger } from '../log.ts';

export async function sweepCommand(_options: Record<string, unknown> & { log: Logger }): Promise<void> {
  throw new Error('tlx sweep is not implemented yet');
}
