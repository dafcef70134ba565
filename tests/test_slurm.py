"""run_all.sh --slurm on a real single-node Slurm cluster that this test starts and stops: a whole
sweep, and an array task requeued in the middle of training that resumes to the same summary.

Debian's slurmctld, slurmd and munge (.ci/run installs them) are configured for 127.0.0.1 in a
temporary directory, with their own munge key and socket, so nothing of the machine's own
configuration is used or changed. Skipped, with the reason, where the binaries are missing or
the test does not run as root (slurmd must be able to start jobs).
"""
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import run

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
missing = [b for b in BINARIES if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
pytestmark = [
    pytest.mark.skipif(bool(missing), reason=f"Slurm/munge not installed ({', '.join(missing)}); "
                       f"apt-get install slurmd slurmctld slurm-client munge"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a throw-away Slurm cluster needs root to start jobs"),
    pytest.mark.e2e,
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


CONF = """ClusterName=lrltest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={d}/munge.sock
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MinJobAge=3600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    d = tmp_path / "slurm"
    for sub in ("state", "spool"):
        (d / sub).mkdir(parents=True)
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(CONF.format(host=host, d=d, ctl_port=_free_port(), d_port=_free_port(),
                                cpus=max(2, os.cpu_count() or 1)))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    subprocess.run([_binary("munged"), f"--key-file={key}", f"--socket={d}/munge.sock", f"--pid-file={d}/munged.pid",
                    f"--log-file={d}/munged.log", f"--seed-file={d}/munge.seed", "--force"], check=True)
    daemons = [subprocess.Popen([_binary("slurmctld"), "-D", "-i"], stdout=open(d / "ctl.out", "w"), stderr=subprocess.STDOUT),
               subprocess.Popen([_binary("slurmd"), "-D"], stdout=open(d / "d.out", "w"), stderr=subprocess.STDOUT)]
    try:
        t0 = time.time()
        while True:  # the node must register and become idle
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout.strip()
            if out == "idle":
                break
            assert time.time() - t0 < 60, f"Slurm did not come up: sinfo says {out!r}\n" + (d / "ctl.out").read_text()[-2000:]
            time.sleep(0.5)
        yield d
    finally:
        subprocess.run(["scontrol", "shutdown"], capture_output=True)
        for p in daemons:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if (d / "munged.pid").exists():
            try:
                os.kill(int((d / "munged.pid").read_text()), 15)
            except (ProcessLookupError, ValueError):
                pass


def _wait_for_jobs(ids, timeout=900):
    t0 = time.time()
    while True:
        out = subprocess.run(["squeue", "-h", "-o", "%A %T %r"], capture_output=True, text=True).stdout
        left = [line for line in out.splitlines() if line.split()[0].split("_")[0] in ids]
        if not left:
            return
        assert not any("DependencyNeverSatisfied" in line for line in left), out
        assert time.time() - t0 < timeout, out
        time.sleep(1)


def _job_state(job):
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True).stdout
    return sorted({f.split("=", 1)[1] for line in out.splitlines() for f in line.split() if f.startswith("JobState=")})


def test_run_all_slurm_smoke_sweep(cluster, tmp_path):
    out = tmp_path / "runs"
    proc = run("bash", "run_all.sh", "--setup", "synthetic", "--preset", "smoke", "--slurm", "--out", out)
    ids = {line.split(":")[0]: line.split()[2] for line in proc.stdout.splitlines() if ": job " in line}
    assert list(ids) == ["pretrain", "finetune", "swa", "evaluate", "report"], proc.stdout
    # dependencies: every later stage waits for the one before it
    deps = subprocess.run(["scontrol", "-o", "show", "job", ids["finetune"]], capture_output=True, text=True).stdout
    assert f"afterok:{ids['pretrain']}" in deps
    _wait_for_jobs(set(ids.values()))
    for stage, job in ids.items():
        assert _job_state(job) == ["COMPLETED"], (stage, _job_state(job))
    setup = out / "synthetic"
    # one array index = one run: the smoke sweep's two data seeds are two pre-training tasks
    logs = sorted(p.name for p in (setup / "logs").glob(f"pretrain-{ids['pretrain']}_*.out"))
    assert logs == [f"pretrain-{ids['pretrain']}_0.out", f"pretrain-{ids['pretrain']}_1.out"]
    for part in ("d0", "d1"):
        for stage in ("pretrain", "finetune", "swa", "geometry"):
            assert (setup / stage / part / "results.json").exists(), (stage, part)
    summary = json.loads((setup / "summary.json").read_text())
    assert summary["plrs"] == [1e-3, 1e-2, 0.3]
    assert all(e["pretrain"]["n_seeds"] == 2 and e["geometry"] for e in summary["per_plr"])
    assert (setup / "report.md").exists()


def _requeue(job, task, timeout=120):
    """scontrol requeue JOB_TASK, then let the task start again at once: Slurm gives a requeued batch job
    a begin time about two minutes ahead (reason BeginTime), which a test need not wait for."""
    task = f"{job}_{task}"
    out = subprocess.run(["scontrol", "requeue", task], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    t0 = time.time()
    while _job_state(task) != ["PENDING"]:
        assert time.time() - t0 < timeout, _job_state(task)
        time.sleep(0.2)
    out = subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_requeued_task_resumes_to_the_same_summary(cluster, tmp_path):
    """An array task requeued in the middle of pre-training (scontrol requeue JOB_TASK: Slurm stops it
    and queues it again) resumes from its checkpoint, and the sweep's summary.json is that of the same
    sweep run without interruption (locally). One thread everywhere: bitwise-equal training."""
    from colour_images import write_colour_cifar
    write_colour_cifar(tmp_path / "data", "cifar10", 5, [2] * 10)
    sweep = ("bash", "run_all.sh", "--setup", "requeue", "--model", "convnet_si", "--dataset", "cifar10",
             "--data_dir", tmp_path / "data", "--preset", "smoke", "--plrs", "1e-3 1e-1", "--epochs", "150",
             "--stages", "pretrain", "--threads", "1")
    proc = run(*sweep, "--slurm", "--out", tmp_path / "slurm")
    ids = {line.split(":")[0]: line.split()[2] for line in proc.stdout.splitlines() if ": job " in line}
    assert list(ids) == ["pretrain", "report"], proc.stdout
    setup = tmp_path / "slurm" / "requeue"
    target = setup / "pretrain" / "plr1e-3_s0"  # array task 0
    t0 = time.time()
    while not (target / "checkpoints" / "last.pt").exists():  # its first epochs are done
        assert not (target / "results.json").exists(), "task 0 finished before it could be requeued"
        assert time.time() - t0 < 300, subprocess.run(["squeue"], capture_output=True, text=True).stdout
        time.sleep(0.05)
    _requeue(ids["pretrain"], 0)
    _wait_for_jobs(set(ids.values()))
    for stage, job in ids.items():
        assert _job_state(job) == ["COMPLETED"], (stage, _job_state(job))
    log = (setup / "logs" / f"pretrain-{ids['pretrain']}_0.out").read_text()  # appended to by both attempts
    assert log.count("] task 0 on ") == 2, log[-3000:]
    assert "DUE TO JOB REQUEUE" in log and "SIGTERM: checkpoint written at epoch" in log, log[-3000:]
    assert f"resuming {target} from epoch" in log, log[-3000:]
    # the same sweep, uninterrupted
    run(*sweep, "--jobs", "2", "--out", tmp_path / "local")
    local = tmp_path / "local" / "requeue"
    a, b = (json.loads((d / "summary.json").read_text()) for d in (setup, local))
    assert a.pop("missing") == [n.replace(str(tmp_path / "local"), str(tmp_path / "slurm")) for n in b.pop("missing")]
    assert a == b
    assert [e["plr"] for e in a["per_plr"]] == [1e-3, 0.1] and a["per_plr"][0]["pretrain"]["n_seeds"] == 1
    assert (setup / "pretrain" / "plr1e-3_s0" / "metrics.jsonl").read_text() == \
        (local / "pretrain" / "plr1e-3_s0" / "metrics.jsonl").read_text()
