import type { Logger } from '../log.ts';

export async function convertCommand(_options: Record<string, unknown> & { log: Logger }): Promise<void> {
  throw new Error('tlx convert is not implemented yet');
}
