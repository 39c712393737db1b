"""Where the runs of an experiment execute: in this process, or as Ray tasks.

An executor maps `fn(item, *args)` over items and yields results as runs finish (any order);
the caller records each result as it arrives, so a sweep that dies keeps what finished.
Ray is an optional extra (`pip install "sgtlab[ray]"`): only `RayExecutor` imports it.
"""
from __future__ import annotations

import os
import signal
from typing import Any, Callable, Iterable, Iterator

from sgtlab.errors import SgtlabError

EXECUTORS = ("local", "ray")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# GPU memory a run needs beyond what its tensors take: the CUDA context and cuDNN/cuBLAS workspaces
# (about 0.5 GiB per process on recent GPUs), and headroom for the allocator's fragmentation
CUDA_CONTEXT_BYTES = 768 << 20
HEADROOM = 1.25


def gpu_memory() -> list[tuple[int, int]]:
    """(free, total) bytes of every visible CUDA device; [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [tuple(torch.cuda.mem_get_info(i)) for i in range(torch.cuda.device_count())]


def plan_gpu_workers(run_bytes: int, devices: list[tuple[int, int]] | None = None, cores: int | None = None,
                     max_per_gpu: int = 16) -> list[int]:
    """The GPU of every worker slot: as many runs on each GPU as its free memory holds (`run_bytes`
    of tensors each, plus the CUDA context and headroom), at most `max_per_gpu`, and in all at most
    one per CPU core (each run's process feeds its GPU from one core); slots are dealt out over the
    GPUs in turn, so a sweep with fewer runs than slots still spreads over all GPUs. At least one
    slot on GPU 0 (a run too big for the free memory still gets its try, alone)."""
    devices = gpu_memory() if devices is None else devices
    if not devices:
        return []
    need = int(run_bytes * HEADROOM) + CUDA_CONTEXT_BYTES
    fit = [min(max_per_gpu, free // max(1, need)) for free, _ in devices]
    budget = max(1, cores if cores is not None else _cores())
    slots: list[int] = []
    while len(slots) < budget and any(fit):
        for gpu, left in enumerate(fit):
            if left and len(slots) < budget:
                slots.append(gpu)
                fit[gpu] -= 1
    return slots or [0]


def measure_run_bytes(train: dict, eval_batch: int | None = None) -> int:
    """Peak CUDA memory of a run's training steps and an evaluation batch, measured on GPU 0 (two
    training steps of `train`, a TrainConfig dict, then one attack step on an evaluation batch)."""
    import torch

    from sgtlab.device import eval_batch_size
    from sgtlab.experiments.estimate import _data, time_training_steps
    from sgtlab.train import TrainConfig

    tc = TrainConfig.from_dict({**train, "device": "cuda"})
    dev = torch.device("cuda", 0)
    torch.cuda.reset_peak_memory_stats(dev)
    data, _ = _data(tc, "train", max(tc.batch_size * 3, eval_batch_size(eval_batch, dev)))
    _, model = time_training_steps(tc, data, dev, steps=1, warmup=1)
    model.eval()
    x = data.x[:eval_batch_size(eval_batch, dev)].to(dev).requires_grad_(True)
    torch.autograd.grad(model(x).sum(), x)
    peak = torch.cuda.max_memory_allocated(dev)
    del model, x
    torch.cuda.empty_cache()
    return int(peak)


def gpu_slots(workers: str | int, train_dicts: list[dict], devices: list[tuple[int, int]] | None = None,
              cores: int | None = None, measure=None) -> list[int] | None:
    """The worker plan on CUDA (None on a CPU): `--workers auto` fits runs by the measured peak
    memory of the preset's hungriest training setup (`measure(train_dict) -> bytes`, default
    `measure_run_bytes`); a number N deals N slots over the GPUs in turn."""
    devices = gpu_memory() if devices is None else devices
    if not devices:
        return None
    if workers != "auto":
        return [i % len(devices) for i in range(int(workers))]
    measure = measure or measure_run_bytes
    seen, need = set(), 0
    for t in train_dicts:
        key = repr(sorted((k, v) for k, v in t.items() if k not in ("seed", "method_cfg")) + [t.get("method_cfg")])
        if key not in seen:
            seen.add(key)
            need = max(need, measure(t))
    return plan_gpu_workers(need, devices, cores)


def default_workers(device: str | None = None) -> int:
    """`--workers auto`: on a CPU, one run per core (at most 8), each on one thread: sgtlab's small
    models scale poorly over threads (an sgt-cnn training step: 88 ms on one thread, 65 ms on two),
    so two runs side by side finish about 1.4x sooner than two runs one after the other on two
    threads each. On CUDA the caller plans GPU slots (`plan_gpu_workers`); without a plan, 1."""
    import torch

    if device in ("cuda", "auto", None) and torch.cuda.is_available():
        return 1
    return max(1, min(8, _cores()))


def _die_with_parent() -> None:
    """Worker start-up (Linux): be killed when the driver dies, even by SIGKILL, so a restarted
    driver never finds an orphaned worker still writing the run it resumes. Elsewhere a no-op."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        import multiprocessing

        parent = multiprocessing.parent_process()
        if parent is not None and parent.pid != os.getppid():  # the driver died before the prctl
            os._exit(1)


def _prepare_process(threads: int | None) -> None:
    """What every process that runs runs needs: glibc keeping freed memory (as the CLI does) and
    torch's thread count fixed to its share (torch reads OMP_NUM_THREADS only once)."""
    from sgtlab.device import keep_freed_memory

    keep_freed_memory()
    if threads:
        import torch

        torch.set_num_threads(threads)


def _init_worker(threads: int, gpus=None) -> None:
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the driver alone answers it (it stops the workers),
    # or a worker would hand the KeyboardInterrupt back as a result and take the next run
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a named multiprocessing semaphore: a worker stopped by Ctrl-C would
    # leave it behind, and the resource tracker prints a warning about it; a thread lock is enough
    # in a worker (its progress goes to the driver, not to a shared terminal)
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    if gpus is not None:
        # this worker's GPU, taken before anything initialises CUDA: the run sees it as its only
        # device (cuda:0), as it would alone on a one-GPU machine
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    _prepare_process(threads)


def _stop_workers(pool) -> None:
    """Terminate a process pool's workers and drop its queued work (Python 3.14 has
    `ProcessPoolExecutor.terminate_workers`; before it, the pool's own process table)."""
    stop = getattr(pool, "terminate_workers", None)
    if stop is not None:
        stop()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join()
    pool.shutdown(wait=True, cancel_futures=True)


class LocalExecutor:
    """Runs on this machine: one at a time in this process (`workers=1`), or `workers` at once in
    worker processes that share the CPU threads equally; results come as runs finish. `gpus`: the
    GPU of every worker slot (`plan_gpu_workers`), so several runs share a GPU, one process each."""

    name = "local"

    def __init__(self, workers: int = 1, gpus: list[int] | None = None):
        if workers < 1:
            raise SgtlabError(f"--workers must be >= 1, got {workers}")
        self.workers, self.gpus = (len(gpus), list(gpus)) if gpus else (workers, None)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *args) -> Iterator[Any]:
        items = list(items)
        workers = min(self.workers, len(items))
        if workers <= 1:  # in this process: GPU 0 of the plan is this process's default device
            for item in items:
                yield fn(item, *args)
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        import torch

        threads = max(1, torch.get_num_threads() // workers)
        # spawn, not fork: a forked copy of a process that already ran torch's thread pools can hang
        ctx = multiprocessing.get_context("spawn")
        gpus = None
        if self.gpus:  # the first `workers` slots of the plan (dealt over the GPUs in turn)
            gpus = ctx.Queue()
            for g in self.gpus[:workers]:
                gpus.put(g)
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, gpus))
        pending = {pool.submit(fn, item, *args) for item in items}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        except Exception:
            # the first failure stops the sweep: queued runs are dropped, running ones end first
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        except BaseException:
            # Ctrl-C (or the consumer stopping: GeneratorExit): the running runs stop now, not when
            # they end (minutes later); each resumes from its last checkpoint next time. The pool
            # has already handed the next runs to the workers, so cancelling futures alone is not
            # enough: the workers go
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)


def _run_task(fn: Callable[..., Any], threads: int | None, cwd: str, plugins: list[str], item: Any, *args) -> Any:
    """The body of one Ray task: work in the driver's folder where this node has it (so relative
    paths in the arguments mean what they mean to the driver; Ray workers start wherever Ray was
    started), import the driver's plug-ins (`--import`: a Ray worker does not inherit its
    environment, on a cluster least of all), fix torch's thread count to the task's CPUs (a Ray
    worker process is reused by tasks of other sizes, and torch reads OMP_NUM_THREADS only once),
    then run."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    if plugins:
        from sgtlab.plugins import import_modules

        import_modules(plugins)
    _prepare_process(threads)
    return fn(item, *args)


def _env_number(name: str, default, kind):
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SgtlabError(f"${name} must be a number, got {raw!r}") from None


def _probe(address: str) -> None:
    """Fail fast on a HOST:PORT (or ray://HOST:PORT) nobody listens on: `ray.init` would retry
    for minutes before giving up."""
    import re
    import socket

    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address)
    if not m:
        return  # "auto", "local", ...: Ray resolves these itself
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=5).close()
    except OSError as e:
        raise SgtlabError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
                          f"`ray start --head` and pass the address it prints, or leave out --address "
                          f"for a local Ray") from None


class RayExecutor:
    """Each item is one Ray task: one GPU each where the cluster has GPUs (`gpus_per_task`),
    else `cpus_per_task` CPUs. Connects to `address` (an existing cluster: "auto", "ray://...",
    "HOST:PORT"), to an already initialised Ray, or starts a local Ray for the duration of `map`.

    `fn` and its arguments are sent to the workers, so on a multi-node cluster sgtlab must be
    installed on every node and the paths in the arguments (the experiment folder, data) must
    be on a file system every node sees."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: int | None = None,
                 gpus_per_task: float | None = None, num_cpus: int | None = None, **init_kw: Any):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SgtlabError('--executor ray needs Ray, an optional extra: pip install "sgtlab[ray]" '
                              '(or pip install "ray>=2.9")') from None
        # defaults from the environment, so a sweep can be sized without new command-line options
        cpus_per_task = cpus_per_task if cpus_per_task is not None else _env_number("SGTLAB_RAY_CPUS_PER_TASK", 1, int)
        if gpus_per_task is None and os.environ.get("SGTLAB_RAY_GPUS_PER_TASK"):
            gpus_per_task = _env_number("SGTLAB_RAY_GPUS_PER_TASK", None, float)
        if cpus_per_task < 1:
            raise SgtlabError(f"cpus per Ray task must be >= 1, got {cpus_per_task}")
        if gpus_per_task is not None and gpus_per_task < 0:
            raise SgtlabError(f"GPUs per Ray task must be >= 0, got {gpus_per_task}")
        self.address, self.cpus_per_task, self.gpus_per_task = address, cpus_per_task, gpus_per_task
        self.num_cpus, self.init_kw = num_cpus, init_kw
        if address:
            _probe(address)  # before any work

    def _connect(self) -> bool:
        """Make sure Ray is initialised; True when this call started it (and `map` shuts it down)."""
        import ray

        if ray.is_initialized():
            return False
        kw: dict[str, Any] = dict(include_dashboard=False, logging_level="warning")
        if self.address is None and not os.environ.get("RAY_ADDRESS") and self.num_cpus is not None:
            kw["num_cpus"] = self.num_cpus  # only for a Ray started here (a cluster has its own)
        kw.update(self.init_kw)
        try:
            ray.init(address=self.address, **kw)
        except ConnectionError as e:
            raise SgtlabError(f"cannot connect to the Ray cluster at {self.address!r}: {e}") from None
        return True

    def _resources(self) -> dict[str, float]:
        import ray

        gpus = self.gpus_per_task
        if gpus is None:  # one GPU per run where the cluster has any (the run's --device auto uses it)
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        return {"num_cpus": self.cpus_per_task, "num_gpus": gpus}

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *args) -> Iterator[Any]:
        import ray
        from ray.exceptions import RayTaskError

        items = list(items)
        if not items:
            return
        started = self._connect()
        pending: dict[Any, Any] = {}
        try:
            res = self._resources()
            # Ray's default retries (3) re-run a task whose worker died (node lost, OOM kill): a run is
            # idempotent and resumes from its checkpoint; exceptions raised by a run are not retried
            task = ray.remote(**res)(_run_task)
            fn_ref = ray.put(fn)
            from sgtlab.plugins import ENV

            plugins = [n for n in os.environ.get(ENV, "").split(",") if n]
            pending = {task.remote(fn_ref, self.cpus_per_task, os.getcwd(), plugins, item, *args): item
                       for item in items}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayTaskError as e:
                        # a bad-input error inside a run reads as it would locally: one line
                        if isinstance(getattr(e, "cause", None), SgtlabError):
                            raise e.cause from None
                        raise
                    yield result
        finally:
            # the first failure (or Ctrl-C) stops the sweep, as the local executor does; cancelled runs
            # resume from their last checkpoint next time
            for ref in pending:
                ray.cancel(ref)
            if started:
                ray.shutdown()


def get_executor(name: str = "local", **kw):
    if name == "local":
        if kw.get("address"):
            raise SgtlabError("--address is the address of a Ray cluster: use it with --executor ray")
        return LocalExecutor(kw.get("workers") or 1, kw.get("gpus"))
    if name == "ray":
        kw.pop("workers", None)
        gpus = kw.pop("gpus", None)
        if gpus and kw.get("gpus_per_task") is None and not os.environ.get("SGTLAB_RAY_GPUS_PER_TASK"):
            # as many runs per GPU as the local plan puts on one (Ray packs fractional GPUs)
            kw["gpus_per_task"] = 1 / max(gpus.count(g) for g in set(gpus))
        return RayExecutor(**kw)
    raise SgtlabError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
