import contextlib
import gc
import importlib.util
import io
import os
import random
import re
import selectors
import signal
import subprocess
import sys
import pathlib
import time
import traceback
import warnings

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.errors import main_guard  # noqa: E402


def run(*args, check=True, timeout=600):
    """Run a repository command (python script or bash) from the repo root; returns CompletedProcess."""
    cmd = [sys.executable, *map(str, args)] if str(args[0]).endswith(".py") else list(map(str, args))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def sh():
    return run


_SCRIPTS = {}  # absolute path -> the script's module, imported once per session


def _script(path):
    module = _SCRIPTS.get(path)
    if module is None:
        name = "_script_" + re.sub(r"\W", "_", os.path.relpath(path, ROOT)[:-3])
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # its `if __name__ == "__main__"` stays off: __name__ is `name`
        _SCRIPTS[path] = module
    return module


def call(script, *args, check=True):
    """Run a repository script (train.py, bench/range_test.py, ...) in this process, as `run` runs it
    in a subprocess (from the repo root, one torch thread, main_guard's exit status); returns a
    subprocess.CompletedProcess with the captured stdout and stderr. No interpreter start and no
    re-import of torch: a fraction of a second instead of seconds. Everything a script changes that
    outlives it in this process is put back afterwards: sys.argv, sys.path, the working directory,
    torch's thread count, the SIGTERM handler (the stage loop's), the global RNGs (torch, numpy,
    random), cuDNN's flags, os.environ and the warning filters. An uncaught exception becomes a
    traceback on the captured stderr and exit status 1, as in a subprocess; the exception itself is
    dropped and gc.collect() run, so that no RunDir (and its directory lock) outlives the call."""
    path = os.path.abspath(os.path.join(ROOT, str(script)))
    argv = [str(script), *map(str, args)]
    saved = dict(argv=sys.argv[:], path=sys.path[:], cwd=os.getcwd(), threads=torch.get_num_threads(),
                 sigterm=signal.getsignal(signal.SIGTERM), torch_rng=torch.random.get_rng_state(),
                 np_rng=np.random.get_state(), py_rng=random.getstate(), environ=dict(os.environ),
                 cudnn=(torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark))
    out, err, code = io.StringIO(), io.StringIO(), 0
    gc.freeze()  # what exists now is not the call's garbage: the collection below scans only the call's objects
    try:
        os.chdir(ROOT)
        sys.path.insert(0, os.path.dirname(path))  # as `python script.py` puts the script's folder first
        sys.argv = argv
        torch.set_num_threads(1)  # run() sets OMP_NUM_THREADS=1
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main_guard(_script(path).main)
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001 - a subprocess would print the traceback and exit 1
                traceback.print_exc(file=sys.stderr)
                code = 1
    finally:
        sys.argv = saved["argv"]
        sys.path[:] = saved["path"]
        os.chdir(saved["cwd"])
        torch.set_num_threads(saved["threads"])
        signal.signal(signal.SIGTERM, saved["sigterm"])
        torch.random.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["np_rng"])
        random.setstate(saved["py_rng"])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved["cudnn"]
        if dict(os.environ) != saved["environ"]:
            os.environ.clear()
            os.environ.update(saved["environ"])
        gc.collect()  # the run's objects (RunDir: its open .lock file, the lock) go now, not some time later
        gc.unfreeze()
    proc = subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{' '.join(argv)} exited {code} (in-process)\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def interrupt_at(*args, sig, moment, timeout=120):
    """Start a repository command (as `run` does), read its output line by line as it is printed
    and send `sig` as soon as a line matches the regex `moment` (re.match): an interruption at a
    point the run itself reports, not at a time that races it. stderr is merged into stdout, so the
    one pipe read here never fills up; after the signal the rest is drained to the process's end.
    Fails if the run ends before printing that line or takes longer than `timeout` seconds.
    Returns (returncode, the whole output)."""
    cmd = [sys.executable, *map(str, args)] if str(args[0]).endswith(".py") else list(map(str, args))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline, seen, pending = time.monotonic() + timeout, b"", b""
    # raw reads from the pipe's descriptor (no Python-side buffer), so communicate() below misses nothing
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                proc.kill()
                raise AssertionError(f"no line matching {moment!r} within {timeout}s\n"
                                     f"{(seen + proc.communicate()[0]).decode(errors='replace')[-3000:]}")
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                proc.wait()
                raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode} before printing a line matching "
                                     f"{moment!r}\n{seen.decode(errors='replace')[-3000:]}")
            seen += chunk
            *lines, pending = (pending + chunk).split(b"\n")
            if any(re.match(moment, line.decode(errors="replace")) for line in lines):
                break
    proc.send_signal(sig)
    try:
        rest, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
        raise AssertionError(f"still running {timeout}s after {signal.Signals(sig).name}\n"
                             f"{(seen + rest).decode(errors='replace')[-3000:]}")
    return proc.returncode, (seen + rest).decode(errors="replace")


# ---------------------------------------------------------------- sweeps shared by several test files

@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """`run_all.sh --preset smoke --jobs 2` (the synthetic setup), once per session: (the output root,
    its CompletedProcess). Tests may rerun it in place (reruns change nothing) but must not alter it."""
    out = tmp_path_factory.mktemp("smoke_sweep") / "runs"
    return out, run("bash", "run_all.sh", "--preset", "smoke", "--jobs", "2", "--out", out)


@pytest.fixture(scope="session")
def colour_sweep(tmp_path_factory):
    """A tiny practical image sweep with known answers (tests/colour_images.py: practical_sweep)."""
    import colour_images
    return colour_images.practical_sweep(tmp_path_factory.mktemp("colour_sweep"))


@pytest.fixture(scope="session")
def si_sweep(tmp_path_factory):
    """SI ConvNet pre-training and fine-tuning (--sharpness) runs (tests/colour_images.py: si_sweep)."""
    import colour_images
    return colour_images.si_sweep(tmp_path_factory.mktemp("si_sweep"))
