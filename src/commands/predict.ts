import type { Logger } from '../log.ts';

export async function predictCommand(_options: Record<string, unknown> & { log: Logger }): Promise<void> {
  throw new Error('tlx predict is not implemented yet');
}
