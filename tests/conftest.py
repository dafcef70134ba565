import os
import re
import selectors
import signal
import subprocess
import sys
import pathlib
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
