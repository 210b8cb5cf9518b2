import type { Logger } from '../log.ts';

export async function uiCommand(_options: Record<string, unknown> & { log: Logger }): Promise<void> {
  throw new Error('tlx ui is not implemented yet');
}
