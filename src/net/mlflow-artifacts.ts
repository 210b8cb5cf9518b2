/**
 * MLflow's proxied artifact store as tlx reaches it over HTTP: `mlflow-artifacts:/<path>`
 * (MLflow's own URI scheme for it) resolved against the tracking server this process is
 * configured with ($MLFLOW_TRACKING_URI), with that server's credentials. A queued sweep's
 * data travels this way, so a job names where its data is without naming a host or a path.
 */

export const artifactScheme = 'mlflow-artifacts:';

/** The Authorization header for a tracking server: MLFLOW_TRACKING_TOKEN, else username and password (env, then the URI's user-info). */
export function authHeader(env: NodeJS.ProcessEnv, url: URL): string | undefined {
  if (env.MLFLOW_TRACKING_TOKEN) return `Bearer ${env.MLFLOW_TRACKING_TOKEN}`;
  const username = env.MLFLOW_TRACKING_USERNAME ?? decodeURIComponent(url.username);
  const password = env.MLFLOW_TRACKING_PASSWORD ?? decodeURIComponent(url.password);
  if (username && password) return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  return undefined;
}

/** The artifact path of an `mlflow-artifacts:` URI, checked: relative segments only, no `..`. */
function artifactPathOf(uri: string): string {
  const rest = uri.slice(artifactScheme.length).replace(/^\/+/, '');
  const segments = rest.split('/');
  if (
    !rest ||
    segments.some((segment) => segment === '' || segment === '.' || segment === '..' || segment.includes('\\'))
  )
    throw new Error(`${uri}: expected mlflow-artifacts:/<path> with plain path segments`);
  return segments.join('/');
}

/** Where to fetch an `mlflow-artifacts:` URI, and with which headers, from the tracking server in `env`. */
export function resolveArtifactUri(
  uri: string,
  env: NodeJS.ProcessEnv = process.env,
): { url: string; headers: Record<string, string> } {
  const trackingUri = env.MLFLOW_TRACKING_URI;
  if (!trackingUri || !/^https?:\/\//.test(trackingUri))
    throw new Error(
      `${uri}: an mlflow-artifacts: URI is read through the tracking server; set MLFLOW_TRACKING_URI to its http(s) URL`,
    );
  const server = new URL(trackingUri.replace(/\/+$/, ''));
  const auth = authHeader(env, server);
  server.username = '';
  server.password = '';
  const encoded = artifactPathOf(uri).split('/').map(encodeURIComponent).join('/');
  return {
    url: `${server.toString().replace(/\/+$/, '')}/api/2.0/mlflow-artifacts/artifacts/${encoded}`,
    headers: auth ? { Authorization: auth } : {},
  };
}
