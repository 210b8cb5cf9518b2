import type { Logger } from '../log.ts';

export async function syncCommand(_options: Record<string, unknown> & { log: Logger }): Promise<void> {
  throw new Error('tlx sync is not implemented yet');
}
