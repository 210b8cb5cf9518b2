"""`mlflow server`, served from one Python process (src/track/mlflow-server.ts starts it).

`mlflow server` is a launcher: it imports MLflow, checks and prepares the stores, then starts
`python -m uvicorn mlflow.server.fastapi_app:app` as a second process, which imports MLflow
again. The second import is half of every start (about 3 of 6 s on 2 cores), paid by each
`tlx ui` and by each of the test suite's servers. Here MLflow's own command runs unchanged,
arguments, checks and environment included; only its last step, starting uvicorn, happens in
this process instead of a child, with the same arguments and the same environment.

Usage: tlx_mlflow_server.py <the arguments of `mlflow server`>
"""

import os
import sys

# The app's module decides at import whether it runs inside a server (and then installs its
# security middleware) by looking for uvicorn among the loaded modules, as it would find it
# in the child `mlflow server` starts: imported first, it is found here too.
import uvicorn

import mlflow.server
from mlflow.cli import cli


def serve_here(command, *, extra_env=None, **_popen_options):
    # What mlflow.server._run_server asks for: [python, "-m", "uvicorn", *uvicorn arguments].
    if list(command[1:3]) != ["-m", "uvicorn"]:
        raise SystemExit(f"tlx_mlflow_server: MLflow asked to start {command!r}, not uvicorn; this MLflow version needs `mlflow server`")
    os.environ.update(extra_env or {})
    # uvicorn's own command line: it serves until SIGTERM/SIGINT, then exits.
    uvicorn.main.main(args=[str(argument) for argument in command[3:]], prog_name="uvicorn")


if not callable(getattr(mlflow.server, "_exec_cmd", None)):
    raise SystemExit("tlx_mlflow_server: this MLflow version starts its server differently; it needs `mlflow server`")
mlflow.server._exec_cmd = serve_here
cli.main(args=["server", *sys.argv[1:]], prog_name="mlflow")
