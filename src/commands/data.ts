import type { Logger } from '../log.ts';

export async function dataCommand(_options: Record<string, unknown> & { log: Logger }): Promise<void> {
  throw new Error('tlx data is not implemented yet');
}
