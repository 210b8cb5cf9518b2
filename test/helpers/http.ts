import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the server does for one request to a path, in order; the last one repeats. */
export type Behaviour =
  | { kind: 'serve' }
  | { kind: 'status'; status: number }
  | { kind: 'truncate'; afterBytes: number }
  | { kind: 'chunked' }
  | { kind: 'slow'; chunkDelayMs: number };

/**
 * A local HTTP server for download tests (127.0.0.1 only): serves files, honours Range,
 * and can fail a request with a status or cut the body short, as scripted per path.
 */
export class TestServer {
  private server = http.createServer((req, res) => this.handle(req, res));
  private routes = new Map<string, { file: string; script: Behaviour[] }>();
  readonly requests: { path: string; range?: string; query: string }[] = [];

  route(urlPath: string, file: string, script: Behaviour[] = [{ kind: 'serve' }]): void {
    this.routes.set(urlPath, { file, script: [...script] });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const [urlPath, query = ''] = (req.url ?? '/').split('?');
    this.requests.push({ path: urlPath, range: req.headers.range, query });
    const route = this.routes.get(urlPath);
    if (!route) {
      res.writeHead(404).end('not found');
      return;
    }
    const behaviour = route.script.length > 1 ? route.script.shift()! : route.script[0];
    if (behaviour.kind === 'status') {
      res.writeHead(behaviour.status).end('failure');
      return;
    }
    const data = fs.readFileSync(route.file);
    if (behaviour.kind === 'slow') {
      res.writeHead(200, { 'Content-Length': data.length, 'Content-Type': 'application/octet-stream' });
      let offset = 0;
      const next = () => {
        if (offset >= data.length) return void res.end();
        res.write(data.subarray(offset, offset + 16384));
        offset += 16384;
        setTimeout(next, behaviour.chunkDelayMs);
      };
      next();
      return;
    }
    if (behaviour.kind === 'chunked') {
      // No Content-Length: the size is only known by counting what arrives.
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      for (let offset = 0; offset < data.length; offset += 65536) res.write(data.subarray(offset, offset + 65536));
      res.end();
      return;
    }
    const match = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = match ? Number(match[1]) : 0;
    const body = data.subarray(start);
    const headers: Record<string, string | number> = {
      'Content-Length': body.length,
      'Content-Type': 'application/octet-stream',
    };
    if (match) headers['Content-Range'] = `bytes ${start}-${data.length - 1}/${data.length}`;
    res.writeHead(match ? 206 : 200, headers);
    if (behaviour.kind === 'truncate') {
      res.write(body.subarray(0, behaviour.afterBytes), () => res.destroy());
      return;
    }
    res.end(body);
  }
}
