import type { Logger } from '../log.ts';

export async function runCommand(_options: Record<string, unknown> & { log: Logger }): Promise<void> {
  throw new Error('tlx run is not implemented yet');
}
