"""Training speed of the image loop (engine/module.py) against a conventional DataLoader loop.

  python bench/images.py                              # about 3 minutes on a 2-core CPU
  python bench/images.py --models convnet_si --threads 1 --channels_last off
  python bench/images.py --device cuda --compile                  # GPU: 50,000 images, steps x10
  bash bench/cuda_check.sh DATA_DIR                                # all GPU timings and checks

Each image model at its default size (convnet_si 32, resnet18_si 32, resnet18 64, vit_small: ViT-Small), batch 128, on
--images random uint8 3x32x32 images with 10 classes (no dataset files needed), trained by
  ours          engine.step.train_epoch as train.py calls it: images on the device, normalised once
                (SI: projected SGD) or augmented and normalised per batch there (resnet18: crop + flip, SGD
                momentum 0.9, weight decay 5e-4; vit_small: RandAugment per image, batched by operation,
                crop + flip, Adam); loss and accuracy summed on
                the device; train.py's speed switches apply to ours only, with train.py's defaults
                (--bf16, --channels_last, --cuda_graph auto; --compile off);
  conventional  a torchvision-style Dataset of HWC uint8 numpy images -> PIL -> transforms (ToTensor,
                Normalize; resnet18 also RandomCrop(32, padding=4), RandomHorizontalFlip; vit_small first
                RandAugment(2, 14) too), a shuffling DataLoader (--workers; pinned on CUDA), .to(device)
                per batch, the record's optimizer (SGD; Adam for vit_small), running
                loss/accuracy by .item() each step and, for SI models, a Python loop rescaling each
                parameter onto the sphere after a .item() of the total norm: the usual CIFAR script;
  kernels       the conventional loop's model, optimizer and step (NCHW, float32, eager) on one fixed
                batch already on the device: no data pipeline, no projection, no host syncs. What
                is left is the model's own kernels, so kernels / conventional bounds what any loop
                that runs the same kernels the same way (eagerly, NCHW, float32) can gain over the
                conventional one (on CUDA it is none: a CUDA graph replays the same kernels without
                their launch costs).
Prints torch version, threads, device; per model each loop's images/s (median [min..max] over
--rounds; the loops are timed in turns so a drifting machine affects all alike; warm-up untimed),
the ratio ours / conventional, the bound kernels / conventional, and ours' projected seconds per
50,000-image epoch.
"""
import itertools
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.images import CIFAR_MEAN, CIFAR_STD, epoch_draws, normalize  # noqa: E402
from models import MODELS, build  # noqa: E402
from core.errors import Parser, UserError, main_guard  # noqa: E402
from engine.args import setup_torch, speed_flags  # noqa: E402
from engine.module import optimizer  # noqa: E402
from engine.sphere import make_optimizer, si_norm  # noqa: E402
from engine.step import TrainStep, epoch_generator, speed_switches, train_epoch, use_bf16  # noqa: E402

BATCH, EPOCH = 128, 50_000  # images per step; CIFAR-10's training set
ELR, LR = 1e-3, 0.01  # SI: lr = ELR x R^2; resnet18: lr (the speed does not depend on them)
LOOPS = ("ours", "conventional", "kernels")
STEPS = {"convnet_si": 8, "resnet18_si": 3, "resnet18": 2, "vit_small": 2}  # timed steps per round on CPU (x10 on CUDA)
IMAGE_MODELS = tuple(STEPS)


def new_model(name, device):
    """The model of seed 0 at its default width on `device`, and its sphere radius (None: no sphere)."""
    model = build(name, 0, MODELS[name].args, num_classes=10, in_channels=3).to(device)
    return model, si_norm(model) if MODELS[name].recipe["sphere"] == "on" else None


class Ours:
    """train_epoch over `steps` batches at a time: slices of fresh permutations of the images."""

    def __init__(self, name, data, device, speed):
        self.device, self.epoch, self.n = device, 0, len(data["y_train"])
        model, radius = new_model(name, device)
        recipe = MODELS[name].recipe  # the record's: train.py's defaults
        opt = optimizer(model, recipe, ELR if radius else LR, radius, device)
        self.aug = recipe["augment"]
        speed = dict(speed, bf16=use_bf16(speed["bf16"], device, MODELS[name].bf16))  # "auto" as train.py resolves it
        self.step = TrainStep(model, opt, data, BATCH, aug=self.aug, device=device, **speed)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        cl = next(model.parameters()).is_contiguous(memory_format=torch.channels_last)  # the first conv
        self.form = f"{'bf16' if self.step.bf16 else 'fp32'}{' NHWC' if cl else ''}"

    def run(self, steps):
        self.epoch += 1
        g, k = epoch_generator(0, 0, self.epoch), -(-steps * BATCH // self.n)
        perm = torch.cat([torch.randperm(self.n, generator=g) for _ in range(k)])[:steps * BATCH]
        draws = epoch_draws(self.aug, len(perm), generator=g, device=self.device)
        train_epoch(self.step, perm.to(self.device), draws, 0, self.sums, None)


class CifarLike(Dataset):
    """As torchvision.datasets.CIFAR10: HWC uint8 numpy images, each returned as PIL through `transform`."""

    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


class Conventional:
    """DataLoader + PIL transforms, .to(device), torch.optim.SGD, the sphere by a Python loop with syncs."""

    def __init__(self, name, images, labels, device, workers):
        self.model, self.radius = new_model(name, device)
        recipe = MODELS[name].recipe  # the record's: its augmentation and optimizer
        aug = {"none": [], "crop_flip": [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]}
        aug["randaugment"] = [transforms.RandAugment(num_ops=2, magnitude=14)] + aug["crop_flip"]
        aug = aug[recipe["augment"]]
        tf = transforms.Compose(aug + [transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
        loader = DataLoader(CifarLike(images, labels, tf), batch_size=BATCH, shuffle=True,
                            drop_last=True, num_workers=workers, pin_memory=device.type == "cuda",
                            persistent_workers=workers > 0)
        self.batches = (b for _ in itertools.count() for b in loader)  # endless, epoch after epoch
        self.device, self.loss, self.correct = device, 0.0, 0
        self.params = [p for p in self.model.parameters() if p.requires_grad]  # SI: the convs; resnet18: all
        self.opt = make_optimizer(self.params, recipe["optimizer"], ELR * self.radius ** 2 if self.radius else LR,
                                  recipe["momentum"], recipe["weight_decay"])  # the plain torch optimizer

    def run(self, steps):
        self.model.train()
        for _ in range(steps):
            x, y = next(self.batches)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            out = self.model(x)
            loss = F.cross_entropy(out, y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            if self.radius:
                with torch.no_grad():
                    norm = torch.sqrt(sum(p.norm() ** 2 for p in self.params)).item()
                    for p in self.params:
                        p.data.mul_(self.radius / norm)
            self.loss += loss.item() * len(y)
            self.correct += (out.argmax(1) == y).sum().item()


class Kernels(Conventional):
    """The conventional loop's step without its data pipeline, projection and syncs: one batch, fixed."""

    def __init__(self, name, images, labels, device):
        super().__init__(name, images, labels, device, 0)
        x, y = next(self.batches)
        self.x, self.y = x.to(device), y.to(device)

    def run(self, steps):
        self.model.train()
        for _ in range(steps):
            loss = F.cross_entropy(self.model(self.x), self.y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


def timed(loop, steps, device):
    """Images per second of `steps` steps of `loop`, by the host clock after syncing the device."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else lambda: None
    sync()
    t0 = time.perf_counter()
    loop.run(steps)
    sync()
    return steps * BATCH / (time.perf_counter() - t0)


def main():
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=IMAGE_MODELS, default=list(IMAGE_MODELS), help="models to time")
    p.add_argument("--images", type=int, default=0, help="random training images held (0 = 2048 on CPU; "
                   "50,000 on CUDA, so that the DataLoader's epoch ends come as often as in training)")
    p.add_argument("--steps", type=int, default=0, help="timed steps per loop per round (0 = "
                   f"{', '.join(f'{k} {v}' for k, v in STEPS.items())} on CPU, 10x as many on CUDA)")
    p.add_argument("--warmup", type=int, default=-1, help="untimed steps per loop first (-1 = 2 on CPU, 10 on CUDA)")
    p.add_argument("--rounds", type=int, default=3, help="turns of the two loops; medians reported")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=-1, help="conventional DataLoader workers (-1 = 0 on CPU, "
                   "min(8, CPUs) on CUDA)")
    speed_flags(p.add_argument_group("ours: train.py's speed switches, with its defaults"))
    p.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS),
                   help="loops to time (the ratio needs ours and conventional, the bound kernels and conventional)")
    args = p.parse_args()
    if 0 < args.images < BATCH or args.steps < 0 or args.warmup < -1 or args.rounds < 1:
        raise UserError(f"need --images >= {BATCH}, --steps >= 0, --warmup >= -1 and --rounds >= 1")
    device = setup_torch(args)
    cuda = device.type == "cuda"
    n = args.images or (50_000 if cuda else 2048)
    workers = args.workers if args.workers >= 0 else min(8, os.cpu_count()) if cuda else 0
    speed = speed_switches(args, device)
    switches = f"; ours: --bf16 {args.bf16} --channels_last {args.channels_last}{' --compile' * args.compile}, " \
               f"CUDA graphs {'on' if speed['cuda_graph'] else 'off'}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}; {n:,} images, "
          f"batch {BATCH}, conventional workers {workers}{switches}")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    data = {"x_train": x.to(device), "y_train": y.to(device), "mean": CIFAR_MEAN, "std": CIFAR_STD}
    data["xn_train"] = normalize(data["x_train"], CIFAR_MEAN, CIFAR_STD)  # (N, 3, 32, 32) float32, as load_data
    hwc, labels = x.permute(0, 2, 3, 1).numpy(), y.tolist()  # (N, 32, 32, 3) uint8 as torchvision's CIFAR10
    make = {"ours": lambda m: Ours(m, data, device, speed),
            "conventional": lambda m: Conventional(m, hwc, labels, device, workers),
            "kernels": lambda m: Kernels(m, hwc, labels, device)}
    loops = {m: {how: make[how](m) for how in args.loops} for m in args.models}
    steps = {m: args.steps or STEPS[m] * (10 if cuda else 1) for m in args.models}
    warmup = args.warmup if args.warmup >= 0 else 10 if cuda else 2
    for loop in (loop for m in args.models for loop in loops[m].values() if warmup):
        loop.run(warmup)
    speeds = {m: {how: [] for how in args.loops} for m in args.models}
    for r in range(args.rounds):  # models in turn, and the loops in alternating order
        for m in args.models:
            for how in args.loops[::1 if r % 2 == 0 else -1]:
                speeds[m][how].append(timed(loops[m][how], steps[m], device))
    print(f"{'model':12s} {'width':>5s} {'steps':>5s} {'ours as':>9s} {'ours img/s':>22s} "
          f"{'conventional img/s':>22s} {'ratio':>6s} {'kernels img/s':>22s} {'bound':>6s} {'ours s/epoch':>12s}")
    for m, s in speeds.items():
        med = {how: statistics.median(v) for how, v in s.items()}
        cell = {how: f"{med[how]:,.0f} [{min(s[how]):,.0f}..{max(s[how]):,.0f}]" if how in s else "-"
                for how in LOOPS}
        over = {how: f"{med[how] / med['conventional']:5.2f}x" if how in med and "conventional" in med
                else "     -" for how in ("ours", "kernels")}  # the ratio and the bound
        epoch = f"{EPOCH / med['ours']:12.1f}" if "ours" in med else f"{'-':>12s}"
        form = loops[m]["ours"].form if "ours" in loops[m] else "-"
        print(f"{m:12s} {str(MODELS[m].args.get('width', '-')):>5s} {steps[m]:5d} {form:>9s} {cell['ours']:>22s} "
              f"{cell['conventional']:>22s} {over['ours']} {cell['kernels']:>22s} {over['kernels']} {epoch}")


if __name__ == "__main__":
    main_guard(main)
