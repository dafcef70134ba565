"""Speed of the population trainer against a conventional one-model-at-a-time loop (synthetic).

  python bench/synthetic.py                       # about 2 minutes on a 2-core CPU
  python bench/synthetic.py --block_steps 50 1    # blocks against step by step, in turns
  python bench/synthetic.py --steps 50 --rounds 5 --threads 1 --procs 2 --chunk 256 512

Prints model-iterations per second (one SGD step of one model = one model-iteration) of
  population    MLPPopulation.sgd_steps with the real batch gathering (data/loader.py), in blocks
                of BLOCK_STEPS steps as engine/population.py runs it (`--block_steps 1`: step by
                step), at the paper preset's population shapes: pre-training (50 seed pairs x 23
                PLRs = 1150 models) and fine-tuning (50 seed pairs x 23 PLRs x 11 FLRs = 12650);
  conventional  a DataLoader over a TensorDataset (batch 16, shuffled), one SIMLP, torch.optim.SGD
                (momentum 0, weight decay 0) on its SI weights, then rescaling onto the sphere, one
                model per optimizer step: the way such experiments are usually written;
  split         the same populations split by data seed over `--procs` processes (1 thread each)
                that step side by side, as `bash run_all.sh --jobs N` runs them; wall-clock time
                from the moment all are told to start until the last one finishes;
their ratio, and the paper preset's projected training time (4.6e7 + 2.53e8 model-iterations).
All are timed in turns, `--rounds` times, and the median of each is reported, so a machine
whose speed drifts (shared cloud cores) affects all of them alike; warm-up steps are not timed.
"""
import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.loader import batch_indices  # noqa: E402
from data.tick import tick_data  # noqa: E402
from engine.checkpoint import stack  # noqa: E402
from models import build  # noqa: E402
from models.mlp import BLOCK_STEPS, CPU_CHUNK, MLPPopulation  # noqa: E402

PAPER_PT, PAPER_FT = 23 * 50 * 40000, 23 * 11 * 50 * 20000  # model-iterations of the paper preset
SHAPES = {"pre-training": 23, "fine-tuning": 23 * 11}  # members per (data seed, model seed) group
DATA_SEEDS, MODEL_SEEDS = range(10), range(5)  # the paper preset: 50 groups


class Population:
    """A population at one shape, trained on the tick data as in engine/population.py."""

    def __init__(self, per_group, data_seeds=DATA_SEEDS):
        self.streams = [(d, s) for d in data_seeds for s in MODEL_SEEDS]  # (data, model seed)
        groups = len(self.streams)
        data = {d: tick_data(d) for d in data_seeds}
        self.xs = torch.stack([data[d]["x_train"] for d, _ in self.streams])  # (P, 512, 32)
        self.ys = torch.stack([data[d]["y_train"] for d, _ in self.streams]).float()
        inits = {s: build("mlp_si", s, num_classes=2, in_channels=32).state_dict() for s in MODEL_SEEDS}
        self.pop = MLPPopulation.from_state_dict(stack([inits[s] for _, s in self.streams for _ in range(per_group)]),
                                                 groups)
        self.lr = torch.logspace(-4.5, -2.1, self.pop.M)
        self.rows, self.step = torch.arange(groups).view(groups, 1, 1), 0
        self.run(3)  # warm-up (work buffers, caches)

    def run(self, n, block=BLOCK_STEPS, chunk=CPU_CHUNK):
        """n steps in blocks of `block` with chunks of `chunk` members, batch order and gathering
        included; returns model-iterations per second."""
        t0, self.pop.chunk = time.perf_counter(), chunk
        idx = batch_indices(self.streams, 0, self.step, n, self.xs.shape[1], 16)  # (P, n, 16)
        for i in range(0, n, block):
            b = idx[:, i:i + block]  # (P, block, 16) each group's batches
            self.pop.sgd_steps(self.xs[self.rows, b], self.ys[self.rows, b], self.lr, 1.0)
        self.step += n
        return self.pop.M * n / (time.perf_counter() - t0)


def _worker(conn, data_seeds):
    """One process of the split measurement: its share of each population, stepped on request."""
    torch.set_num_threads(1)
    pops = {name: Population(per_group, data_seeds) for name, per_group in SHAPES.items()}
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        name, n, block, chunk = msg
        conn.send(pops[name].run(n, block, chunk))


class Split:
    """The populations split by data seed over several processes, stepped side by side."""

    def __init__(self, procs):
        ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited thread pools
        parts = [list(DATA_SEEDS)[j * len(DATA_SEEDS) // procs:(j + 1) * len(DATA_SEEDS) // procs]
                 for j in range(procs)]
        self.conns, self.procs = [], []
        for seeds in parts:
            ours, theirs = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(theirs, seeds), daemon=True)
            p.start()
            self.conns.append(ours)
            self.procs.append(p)
        self.members = {name: len(DATA_SEEDS) * len(MODEL_SEEDS) * g for name, g in SHAPES.items()}
        assert all(c.recv() == "ready" for c in self.conns)

    def run(self, name, n, block, chunk):
        t0 = time.perf_counter()
        for c in self.conns:
            c.send((name, n, block, chunk))
        for c in self.conns:
            c.recv()
        return self.members[name] * n / (time.perf_counter() - t0)

    def close(self):
        for c in self.conns:
            c.send(None)
        for p in self.procs:
            p.join()


class Conventional:
    """One SIMLP, a shuffling DataLoader, torch.optim.SGD, rescaling to the sphere by hand."""

    def __init__(self):
        d = tick_data(0)
        self.loader = DataLoader(TensorDataset(d["x_train"], d["y_train"].float()), batch_size=16,
                                 shuffle=True, drop_last=True)
        self.net = build("mlp_si", 0, num_classes=2, in_channels=32)
        self.opt = torch.optim.SGD(self.net.si_parameters(), lr=5e-3, momentum=0, weight_decay=0)
        self.run(30)  # warm-up

    def run(self, n):
        done, t0 = 0, time.perf_counter()
        while done < n:
            for x, y in self.loader:
                self.opt.zero_grad()
                F.binary_cross_entropy_with_logits(self.net(x), y).backward()
                self.opt.step()
                with torch.no_grad():
                    norm = torch.sqrt(sum(w.pow(2).sum() for w in self.net.si_parameters()))
                    for w in self.net.si_parameters():
                        w.div_(norm)  # back onto the unit sphere
                done += 1
                if done == n:
                    break
        return n / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100,
                   help="timed fine-tuning steps per round (pre-training: 11x as many, same work)")
    p.add_argument("--conventional_steps", type=int, default=2000, help="timed conventional steps per round")
    p.add_argument("--rounds", type=int, default=3, help="turns of the three measurements; medians reported")
    p.add_argument("--block_steps", type=int, nargs="+", default=[BLOCK_STEPS],
                   help="steps per sgd_steps call; several values are timed in turns (1 = step by step)")
    p.add_argument("--chunk", type=int, nargs="+", default=[CPU_CHUNK],
                   help="members per chunk of the step; several values are timed in turns")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--procs", type=int, default=os.cpu_count(),
                   help="processes of the split measurement (default: CPU count; 1 = skip it)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    split = Split(args.procs) if args.procs > 1 else None
    conv, pops = Conventional(), {name: Population(g) for name, g in SHAPES.items()}
    steps = {"pre-training": 11 * args.steps, "fine-tuning": args.steps}
    hows = [(f"{p}{k} {c}: ", p, k, c) for k in args.block_steps for c in args.chunk
            for p in ["", *(["split "] if split else [])]]
    speeds = {key: [] for key in ["conventional", *(how + name for how, *_ in hows for name in SHAPES)]}
    for _ in range(args.rounds):
        speeds["conventional"].append(conv.run(args.conventional_steps))
        for name, pop in pops.items():
            for how, where, k, c in hows:
                speeds[how + name].append((split.run(name, steps[name], k, c) if where else
                                           pop.run(steps[name], k, c)))
    if split:
        split.close()
    speed = {key: statistics.median(s) for key, s in speeds.items()}
    spread = lambda s: f"[{min(s):,.0f} .. {max(s):,.0f}]"
    print(f"conventional loop, 1 model (DataLoader):  {speed['conventional']:10,.0f} model-it/s  "
          f"{spread(speeds['conventional'])}")
    models = {name: len(DATA_SEEDS) * len(MODEL_SEEDS) * g for name, g in SHAPES.items()}
    for how, where, k, c in hows:
        label = f"{args.procs} processes x 1 thread" if where else f"1 process x {torch.get_num_threads()} threads"
        print(f"population, {label}, blocks of {k} step{'s' if k > 1 else ''}, chunks of {c}:")
        for name in SHAPES:
            s = speeds[how + name]
            print(f"  {name:12s} {models[name]:5d} models: {statistics.median(s):10,.0f} model-it/s  {spread(s)}"
                  f"  = x{statistics.median(s) / speed['conventional']:,.0f} the conventional loop")
        total = PAPER_PT / speed[how + "pre-training"] + PAPER_FT / speed[how + "fine-tuning"]
        print(f"  paper preset ({PAPER_PT:.2g} + {PAPER_FT:.3g} model-iterations), training only: "
              f"{total / 60:,.1f} min = {(PAPER_PT + PAPER_FT) / total:,.0f} model-it/s overall")
    print(f"conventional loop: {(PAPER_PT + PAPER_FT) / speed['conventional'] / 3600:,.0f} h for the paper preset")


if __name__ == "__main__":
    main()
