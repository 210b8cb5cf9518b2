"""The Python side of tlx as one long-lived process (src/export/python.ts starts it).

Reads one JSON request per line on stdin, {"id", "op", ...}, and answers one JSON line
per request on its own copy of stdout, {"id", "ok", "report"} or {"id", "ok": false,
"error", "traceback"}; anything else printed goes to stderr. While an operation works it
also writes {"id", "progress": step} lines, at most one a second: tlx stops a worker that
stays silent too long (a stuck library would otherwise hold the run forever). TensorFlow
is imported once, so a sweep exports every trial without paying for the import again.

It exits as soon as stdin closes: when tlx finishes, and when tlx dies (even by SIGKILL),
so it never outlives the run it works for.
"""

import json
import os
import sys
import threading
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Keras imports scikit-learn (in the venv for MLflow) only for its scikit-learn wrappers,
# which tlx never uses; marked absent, as Keras allows, TensorFlow's import is ~0.7 s shorter.
sys.modules.setdefault("sklearn", None)

# Replies get a private copy of stdout; fd 1 then points at stderr, so that whatever
# TensorFlow or a library prints cannot corrupt the protocol.
replies = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)

requests = []
arrived = threading.Condition()


def read_stdin():
    for line in sys.stdin:
        if line.strip():
            with arrived:
                requests.append(json.loads(line))
                arrived.notify()
    # The parent closed the pipe or died: stop at once, even in the middle of an export.
    os._exit(0)


def progress_reporter(request_id):
    last = 0.0

    def progress(step):
        nonlocal last
        now = time.monotonic()
        if now - last >= 1.0:
            last = now
            replies.write(json.dumps({"id": request_id, "progress": step}) + "\n")

    return progress


def main():
    threading.Thread(target=read_stdin, daemon=True).start()
    import tlx_export  # noqa: E402  (imports TensorFlow: once per worker)
    import tlx_predict  # noqa: E402

    operations = {"warm": tlx_export.warm, "export": tlx_export.export, "predict": tlx_predict.predict}
    while True:
        with arrived:
            while not requests:
                arrived.wait()
            request = requests.pop(0)
        try:
            progress = progress_reporter(request["id"])
            progress("start")
            report = operations[request["op"]](request, progress)
            reply = {"id": request["id"], "ok": True, "report": report}
        except Exception as error:
            reply = {"id": request["id"], "ok": False, "error": f"{type(error).__name__}: {error}".split("\n")[0], "traceback": traceback.format_exc()[-4000:]}
        replies.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
