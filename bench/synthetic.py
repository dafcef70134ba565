"""Speed of the population trainer against a conventional one-model-at-a-time loop (synthetic).

  python bench/synthetic.py                       # about 1 minute on a 2-core CPU
  python bench/synthetic.py --steps 50 --rounds 5 --threads 1

Prints model-iterations per second (one SGD step of one model = one model-iteration) of
  population    MLPPopulation.sgd_step with the real batch gathering (data/loader.py), at the
                paper preset's population shapes: pre-training (50 seed pairs x 23 PLRs = 1150
                models) and fine-tuning (50 seed pairs x 23 PLRs x 11 FLRs = 12650 models);
  conventional  a DataLoader over a TensorDataset (batch 16, shuffled), one SIMLP, torch.optim.SGD
                (momentum 0, weight decay 0) on its SI weights, then rescaling onto the sphere, one
                model per optimizer step: the way such experiments are usually written;
their ratio, and the paper preset's projected training time (4.6e7 + 2.53e8 model-iterations).
The three are timed in turns, `--rounds` times, and the median of each is reported, so a machine
whose speed drifts (shared cloud cores) affects all of them alike; warm-up steps are not timed.
"""
import argparse
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
from models.mlp import MLPPopulation, SIMLP, init_member  # noqa: E402

PAPER_PT, PAPER_FT = 23 * 50 * 40000, 23 * 11 * 50 * 20000  # model-iterations of the paper preset
SHAPES = {"pre-training": (50, 23), "fine-tuning": (50, 23 * 11)}  # (groups P, members per group G)


class Population:
    """A population at one shape, trained on the tick data as in utils/population.py."""

    def __init__(self, groups, per_group):
        self.streams = [(d, s) for d in range(10) for s in range(groups // 10)]  # (data, model seed)
        data = {d: tick_data(d) for d in range(10)}
        self.xs = torch.stack([data[d]["x_train"] for d, _ in self.streams])  # (P, 512, 32)
        self.ys = torch.stack([data[d]["y_train"] for d, _ in self.streams]).float()
        self.pop = MLPPopulation.from_members(
            [init_member(s) for _, s in self.streams for _ in range(per_group)], groups)
        self.lr = torch.logspace(-4.5, -2.1, self.pop.M)
        self.rows, self.step = torch.arange(groups).unsqueeze(1), 0
        self.run(3)  # warm-up (work buffers, caches)

    def run(self, n):
        """n steps, batch order and gathering included; returns model-iterations per second."""
        t0 = time.perf_counter()
        idx = batch_indices(self.streams, 0, self.step, n, self.xs.shape[1], 16)  # (P, n, 16)
        for i in range(n):
            b = idx[:, i]  # (P, 16) each group's batch
            self.pop.sgd_step(self.xs[self.rows, b], self.ys[self.rows, b], self.lr, 1.0)
        self.step += n
        return self.pop.M * n / (time.perf_counter() - t0)


class Conventional:
    """One SIMLP, a shuffling DataLoader, torch.optim.SGD, rescaling to the sphere by hand."""

    def __init__(self):
        d = tick_data(0)
        self.loader = DataLoader(TensorDataset(d["x_train"], d["y_train"].float()), batch_size=16,
                                 shuffle=True, drop_last=True)
        self.net = SIMLP().load_member(init_member(0))
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
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    conv, pops = Conventional(), {name: Population(*shape) for name, shape in SHAPES.items()}
    steps = {"pre-training": 11 * args.steps, "fine-tuning": args.steps}
    speeds = {name: [] for name in ["conventional", *pops]}
    for _ in range(args.rounds):
        speeds["conventional"].append(conv.run(args.conventional_steps))
        for name, pop in pops.items():
            speeds[name].append(pop.run(steps[name]))
    speed = {name: statistics.median(s) for name, s in speeds.items()}
    spread = lambda s: f"[{min(s):,.0f} .. {max(s):,.0f}]"
    print(f"conventional loop, 1 model (DataLoader):  {speed['conventional']:10,.0f} model-it/s  "
          f"{spread(speeds['conventional'])}")
    for name, (groups, per_group) in SHAPES.items():
        print(f"population, {name:12s} {groups * per_group:5d} models: {speed[name]:10,.0f} model-it/s  "
              f"{spread(speeds[name])}  = x{speed[name] / speed['conventional']:,.0f} the conventional loop")
    total = PAPER_PT / speed["pre-training"] + PAPER_FT / speed["fine-tuning"]
    print(f"paper preset ({PAPER_PT:.2g} + {PAPER_FT:.3g} model-iterations), training only: "
          f"{total / 60:,.0f} min with populations, "
          f"{(PAPER_PT + PAPER_FT) / speed['conventional'] / 3600:,.0f} h with the conventional loop")


if __name__ == "__main__":
    main()
