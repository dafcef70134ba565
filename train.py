"""Pre-train at fixed PLR(s): every PLR x seed of one setup in one run directory.

LRs are effective LRs (ELR = lr / R^2 on the sphere); the actual lr = ELR * R^2 is printed at start.
Any model of the registry (models/__init__.py) or your own class, on any dataset of the registry
(data/__init__.py) or your own data; the recipe is flags, defaulting to the model record's.

Synthetic example (docs/protocol.md section 7): the members train as one population, in lockstep (the
SI MLP's fused backend, engine/population.py). Every (data seed, model seed) pair is one "run" of the
paper: all its PLRs share the initial point and the mini-batch order.

  # 4 PLRs x 2 model seeds x 2 data seeds = 16 models, 40000 iterations, batch 16
  python train.py --dataset tick --model mlp_si --lr 1e-3 7.5e-3 1e-2 0.1 --seed 0 1 --data_seed 0 1 \
      --out runs/synthetic/pretrain/mine
  # -> config.json, members.jsonl, metrics.jsonl (train/test loss, acc, weight_norm every
  #    --eval_every iterations), checkpoints/final.pt (the weights), checkpoints/step_NNNN.pt (the
  #    last 5 steps, 100 apart, that swa.py averages), results.json

Images (docs/protocol.md sections 3, 4, 6): 200 epochs of batch 128 by default; each member (PLR x
seed) is trained one epoch at a time (engine/module.py), so a run usually holds one (one Slurm
array task).

  python train.py --dataset cifar10 --data_dir ~/datasets --model convnet_si --lr 1e-3 --seed 0 \
      --out runs/convnet_si_cifar10/pretrain/plr1e-3_s0
  # SI ConvNet width 32: radius R = the SI weights' norm at initialisation (about 12), lr = ELR x R^2
  python train.py --dataset fashion_mnist --model convnet_si --lr 1e-3 1e-2 --epochs 10 \
      --train_size 10000 --out runs/fmnist/pretrain/a        # real data installed by Debian
  # your own model and data (docs/usage.md, "Your own model and data")
  python train.py --dataset my_data.npz --model my_net.py:Net --model_args width=16 --lr 1e-2 \
      --optimizer adam --out runs/mine/pretrain/a

Rerunning the same command resumes an interrupted run from checkpoints/last.pt, or does nothing
when results.json exists; with a longer --epochs / --iters (and otherwise the same flags, constant LR)
it continues a finished run to that length, as if it had been started with it.
"""
from core.errors import main_guard
from engine import setup


def main():
    setup.pretrain(setup.pretrain_parser(__doc__.split("\n")[0]).parse_args())


if __name__ == "__main__":
    main_guard(main)
