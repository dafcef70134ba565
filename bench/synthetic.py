"""Speed of the population trainer against a conventional one-model-at-a-time loop (synthetic).

  python bench/synthetic.py                 # about 2 minutes on a 2-core CPU
  python bench/synthetic.py --steps 100 --threads 1

Prints model-iterations per second (one SGD step of one model = one model-iteration) of
  population    MLPPopulation.sgd_step with the real batch gathering (data/loader.py), at the
                paper preset's population shapes: pre-training (50 seed pairs x 23 PLRs = 1150
                models) and fine-tuning (50 seed pairs x 23 PLRs x 11 FLRs = 12650 models);
  conventional  a DataLoader over a TensorDataset (batch 16, shuffled), one SIMLP, torch.optim.SGD
                (momentum 0, weight decay 0) on its SI weights, then rescaling onto the sphere, one
                model per optimizer step: the way such experiments are usually written;
their ratio, and the paper preset's projected training time (4.6e7 + 2.53e8 model-iterations).
"""
import argparse
import os
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


def population_speed(groups, per_group, steps):
    """Model-iterations per second of `steps` population steps, batch gathering included."""
    streams = [(d, s) for d in range(10) for s in range(groups // 10)]
    data = {d: tick_data(d) for d in range(10)}
    xs = torch.stack([data[d]["x_train"] for d, _ in streams])  # (P, 512, 32)
    ys = torch.stack([data[d]["y_train"] for d, _ in streams]).float()
    pop = MLPPopulation.from_members([init_member(s) for s, _ in streams for _ in range(per_group)], groups)
    lr = torch.logspace(-4.5, -2.1, pop.M)
    rows = torch.arange(groups).unsqueeze(1)

    def run(start, n):
        idx = batch_indices(streams, 0, start, n, 512, 16)  # (P, n, 16)
        for i in range(n):
            pop.sgd_step(xs[rows, idx[:, i]], ys[rows, idx[:, i]], lr, 1.0)

    run(0, 3)  # warm-up
    t0 = time.perf_counter()
    run(3, steps)
    return pop.M * steps / (time.perf_counter() - t0)


def conventional_speed(steps):
    d = tick_data(0)
    loader = DataLoader(TensorDataset(d["x_train"], d["y_train"].float()), batch_size=16, shuffle=True,
                        drop_last=True)
    net = SIMLP().load_member(init_member(0))
    opt = torch.optim.SGD(net.si_parameters(), lr=5e-3, momentum=0, weight_decay=0)
    done, t0 = -3, None  # 3 warm-up steps
    while done < steps:
        for x, y in loader:
            if done == 0:
                t0 = time.perf_counter()
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(net(x), y).backward()
            opt.step()
            with torch.no_grad():
                norm = torch.sqrt(sum(w.pow(2).sum() for w in net.si_parameters()))
                for w in net.si_parameters():
                    w.div_(norm)
            done += 1
            if done == steps:
                break
    return steps / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200, help="timed population steps per shape")
    p.add_argument("--conventional_steps", type=int, default=3000, help="timed steps of the conventional loop")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    conv = conventional_speed(args.conventional_steps)
    print(f"conventional loop (1 model, DataLoader):     {conv:12,.0f} model-it/s")
    speeds = {}
    for name, (groups, per_group) in {"pre-training": (50, 23), "fine-tuning": (50, 253)}.items():
        speeds[name] = population_speed(groups, per_group, args.steps)
        print(f"population, {name:12s} {groups * per_group:6d} models: {speeds[name]:12,.0f} model-it/s"
              f"   x{speeds[name] / conv:,.0f} the conventional loop")
    conv_again = conventional_speed(args.conventional_steps)  # the machine drifts: measure both ends
    print(f"conventional loop again:                     {conv_again:12,.0f} model-it/s")
    total = PAPER_PT / speeds["pre-training"] + PAPER_FT / speeds["fine-tuning"]
    print(f"paper preset ({(PAPER_PT + PAPER_FT):.2e} model-iterations), training only: "
          f"{total / 60:.0f} min with populations, {(PAPER_PT + PAPER_FT) / conv / 3600:.0f} h conventionally")


if __name__ == "__main__":
    main()
