"""Runs `python -m sgtlab ARGS` many times without paying Python's and torch's start-up each time:
this process imports sgtlab's CLI once, then for each request (a JSON line on stdin) forks a child
that runs the `sgtlab` module as `python -m sgtlab` does (runpy, `__main__`), with its own working
folder, environment, stdout/stderr files and optional limits, and answers a JSON line with the exit
code, both outputs and the child's peak memory (ru_maxrss from wait4; it includes the pages shared
with this parent, so it is an upper bound). Used by tests/test_hostile_inputs.py."""
from __future__ import annotations

import json
import os
import resource
import runpy
import signal
import sys
import time
import traceback


def _interrupt_at(target: str, n: int) -> None:
    """A SIGINT to this process when the n-th call of `target` ("module:function") starts, as a
    user's Ctrl-C at that moment would be: an interruption at a point the command reaches for
    certain, not a race with it."""
    import importlib

    module_name, attr = target.split(":")
    module = importlib.import_module(module_name)
    func, count = getattr(module, attr), [0]

    def interrupted(*a, **kw):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at once, in this thread
        return func(*a, **kw)

    setattr(module, attr, interrupted)


def _child(req: dict, out_path: str, err_path: str) -> None:
    code = 1
    try:
        # as in a terminal: a shell without job control starts background jobs (a CI script run with
        # `&`) with SIGINT ignored, which the child would inherit and the Ctrl-C cases would not see
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(req["cwd"])
        os.environ.update(req.get("env") or {})
        if req.get("fsize"):
            resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
        if req.get("interrupt_at"):  # Ctrl-C when the N-th call of a function starts: no race
            _interrupt_at(req["interrupt_at"], int(req.get("interrupt_call", 1)))
        fd_in = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd_in, 0)
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        sys.argv = ["sgtlab", *req["argv"]]
        try:
            runpy.run_module("sgtlab", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what the interpreter would print: a traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> None:
    import sgtlab.cli

    sgtlab.cli.build_parser()  # imports every command module (torch and all) once, in the parent
    # MNIST-5k's parsed CSV is cached per process (lru_cache): parse it once here, not in every child
    from sgtlab.data.mnist5k import _load_all

    _load_all()
    workdir = sys.argv[1]
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for n, line in enumerate(sys.stdin):
        req = json.loads(line)
        out_path, err_path = os.path.join(workdir, f"out{n}.txt"), os.path.join(workdir, f"err{n}.txt")
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(req, out_path, err_path)
        status = usage = None
        if req.get("interrupt_when"):  # Ctrl-C once a file appears (e.g. the first checkpoint)
            while True:
                done, st, ru = os.wait4(pid, os.WNOHANG)
                if done:
                    status, usage = st, ru
                    break
                if os.path.exists(req["interrupt_when"]):
                    os.kill(pid, signal.SIGINT)
                    break
                time.sleep(0.05)
        if status is None:
            _, status, usage = os.wait4(pid, 0)
        with open(out_path) as f_out, open(err_path) as f_err:
            res = {"rc": os.waitstatus_to_exitcode(status), "stdout": f_out.read(), "stderr": f_err.read(),
                   "maxrss_kb": usage.ru_maxrss, "seconds": round(time.perf_counter() - t0, 3)}
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
