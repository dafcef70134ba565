"""One image member's training step and epoch, and the speed switches (engine/module.py trains
with them; bench/images.py times them).

    step = TrainStep(model, opt, data, 128, aug=False, device=device, cuda_graph=True)  # opt: ProjectedSGD ...
    g = epoch_generator(salt, seed, epoch)                    # the member's epoch, on the CPU
    perm = torch.randperm(n, generator=g).to(device)          # then augment_draws(n, generator=g)
    train_epoch(step, perm, None, 0, sums, stop)              # one step per batch of perm

A step reads its batch through static buffers, so on CUDA it can be captured once in a CUDA
graph and replayed (`TrainStep`); the speed switches (`speed_switches`: --bf16, --channels_last,
--compile, --cuda_graph) all act here.
"""
import math

import torch
import torch.nn.functional as F

from core.errors import UserError
from core.seeding import generator
from data.images import DRAW_ROWS, augment_batch


# ---------------------------------------------------------------- the speed switches

def speed_switches(args, device):
    """The speed switches from the scripts' flags (engine/args.py: speed_flags), as TrainStep's and
    run_image_stage's keyword arguments. --cuda_graph auto is on for CUDA, with or without --compile
    (the compiled step is captured like the eager one)."""
    if args.cuda_graph == "on" and device.type != "cuda":
        raise UserError(f"--cuda_graph on needs a CUDA device, not {device}")
    graph = args.cuda_graph == "on" or (args.cuda_graph == "auto" and device.type == "cuda")
    return {"bf16": args.bf16, "channels_last": args.channels_last, "compile_": args.compile, "cuda_graph": graph}


def use_bf16(bf16, device, record_default):
    """bf16: True/"on", False/"off" or "auto": on for CUDA where the model record says bf16 was
    measured to keep the accuracy (`ModelRecord.bf16`: the practical ResNet-18, 1.5x faster on an
    H100, test accuracy unchanged over 3 seeds; it cost the SI models 1-10 points), off elsewhere
    and on CPUs (docs/benchmarks.md)."""
    if bf16 == "auto":
        return device.type == "cuda" and record_default
    return bf16 in (True, "on")


def speed_setup(model, device, channels_last, compile_):
    """The model in the form it is trained in: memory format and torch.compile (bf16 autocast:
    `autocast`; CUDA graphs: `TrainStep`).
    channels_last: True/"on", False/"off" or "auto": on for CUDA (an SI ResNet-18 epoch 2.1x faster
    on an H200 in float32 with CUDA graphs, bench/cuda_check.sh) and for CPUs (1.06-1.3x; the
    ResNets' strided shortcuts run as models.resnet.Pointwise there), off for other devices.
    compile_: torch.compile with static shapes, so that an epoch's short last batch gets a compiled
    version of its own rather than a dynamic-shape one that full batches would then use too (a step
    replayed from a CUDA graph keeps the kernels it was captured with). Returns the callable to
    train with; it shares its parameters with `model`."""
    model = model.to(device)
    if channels_last in (True, "on") or (channels_last == "auto" and device.type in ("cuda", "cpu")):
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model, dynamic=False) if compile_ else model


def autocast(device, bf16):
    """bf16 autocast; no weight cache (each weight is cast once per forward anyway; CUDA graphs
    cannot capture the cache)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False)


# ---------------------------------------------------------------- batches, the step, the epoch

def epoch_generator(salt, seed, epoch):
    """The generator of one member's epoch: its permutation first, then augmentation draws."""
    return generator("image_batches", salt, seed, epoch)


def schedule_factor(schedule, t, total):
    """The LR of optimizer step t (0-based) of a stage of `total` steps, as a fraction of the run's LR:
    constant: 1; cosine: 0.5 x (1 + cos(pi t / total)), so step 0 uses the full LR, step total/2
    half of it and the last step (t = total - 1) 0.5 x (1 + cos(pi (total - 1) / total)) > 0."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t / total))
    raise UserError(f"--schedule {schedule!r}: unknown; known: constant, cosine")


def batch_starts(n, batch_size):
    """Start offsets of an epoch's batches; a last batch of 1 image is dropped (train-mode BN needs 2)."""
    return [s for s in range(0, n, batch_size) if n - s > 1]


class TrainStep:
    """One member's SGD step on a batch given by its indices into the training set, run eagerly or,
    on CUDA, replayed from a CUDA graph (one launch for the whole step instead of hundreds; small
    models are bound by those launches).

    The step reads the batch through static buffers (the indices; with augmentation also the crop
    offsets and flips), so the same code serves both ways: gather the images (augmented: crop, flip,
    normalise), forward, cross-entropy, backward, the optimizer's step (a projected optimizer also
    rescales onto the sphere, engine/sphere.py), and loss x n, correct and n added to `self.sums`
    (float64, on the device). The graph is captured at the first full batch, after three warm-up
    steps whose effects (weights, BN buffers, optimizer state, sums) are undone, so a graphed run
    trains as the eager one does. A shorter last batch runs
    eagerly. bf16, channels_last, compile_, cuda_graph: the speed switches (`speed_switches`);
    the model is trained in the form `speed_setup` gives it (bf16: resolved by the caller, `use_bf16`).
    """

    WARMUP = 3  # steps on a side stream before capture (cuDNN/cuBLAS set-up, allocations, --compile's compiling)

    def __init__(self, model, opt, data, batch_size, *, aug, device, bf16=False, channels_last=False,
                 compile_=False, cuda_graph=False):
        self.net = speed_setup(model, device, channels_last, compile_)  # shares model's parameters
        self.model, self.opt, self.data = model, opt, data
        self.batch_size, self.device = batch_size, device
        self.bf16 = bf16 in (True, "on")  # "auto" is the record's to resolve (use_bf16)
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.aug = {False: "none", True: "crop_flip"}.get(aug, aug)  # the recipe's --augment (or a bool)
        rows = DRAW_ROWS[self.aug]
        self.draws = torch.zeros(rows, batch_size, dtype=torch.long, device=device) if rows else None
        # RandAugment groups a batch's images by the operation drawn: shapes that depend on the data,
        # so it runs before the step (outside any CUDA graph), into a static batch the step reads
        self.xb = (torch.empty(batch_size, *data["x_train"].shape[1:], device=device)
                   if self.aug == "randaugment" else None)
        self.mean = torch.tensor(data["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(data["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.use_graph, self.graph = cuda_graph, None

    def __call__(self, idx, draws=None):
        """One step on the images idx (n,) (int64 on the device; draws: their `epoch_draws` columns)."""
        n = len(idx)
        self.idx[:n].copy_(idx)
        if self.draws is not None:
            self.draws[:, :n].copy_(draws)
        if self.xb is not None:
            self.xb[:n].copy_(augment_batch(self.data["x_train"][idx], self.draws[:, :n], self.mean, self.std))
        if self.use_graph and n == self.batch_size:
            if self.graph is None:
                self._capture()
            self.graph.replay()
        else:
            self.opt.zero_grad(set_to_none=True)
            self._body(n)

    def _body(self, n):
        idx = self.idx[:n]
        if self.xb is not None:  # augmented before the step
            xb = self.xb[:n]
        elif self.draws is not None:  # crop + flip: augment the uint8 batch, then normalise (black padding)
            xb = augment_batch(self.data["x_train"][idx], self.draws[:, :n], self.mean, self.std)
        else:
            xb = self.data["xn_train"][idx]
        yb = self.data["y_train"][idx]
        with autocast(self.device, self.bf16):
            out = self.net(xb)
            loss = F.cross_entropy(out.float(), yb)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.sums[:2] += torch.stack([loss.detach().double() * n, (out.argmax(1) == yb).sum().double()])
            self.sums[2] += n

    def _capture(self):
        n = self.batch_size
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        params = [p for group in self.opt.param_groups for p in group["params"]]
        tensors = lambda p: {k: v for k, v in self.opt.state.get(p, {}).items() if torch.is_tensor(v)}  # noqa: E731
        saved = {p: {k: v.clone() for k, v in tensors(p).items()} for p in params}  # momentum, Adam's moments, step
        sums = self.sums.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                self.opt.zero_grad(set_to_none=True)
                self._body(n)
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.no_grad():  # undo the warm-up: in place, the graph keeps these addresses
            for k, v in self.model.state_dict().items():
                v.copy_(state[k])
            for p in params:  # state the warm-up created starts at 0, as a fresh optimizer's does
                for k, v in tensors(p).items():  # (SGD: 0 x momentum + grad = grad; Adam: step 0, zero moments)
                    v.copy_(saved[p][k]) if k in saved[p] else v.zero_()
            self.sums.copy_(sums)
        self.opt.zero_grad(set_to_none=True)  # backward allocates the gradients inside the graph
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._body(n)


def train_epoch(step, perm, draws, start, sums, stop, before=None):
    """Train one member from batch `start` of the epoch whose permutation (on the device) is `perm`
    (draws: the epoch's (3, n) augmentation draws in batch order, or None), one `step` per batch.

    sums: (3,) float64 device tensor, accumulating loss x n, correct, n (no host sync per step).
    Returns the index of the next batch (== number of batches when the epoch is done; less when
    `stop` was set, then the caller checkpoints and resumes there).
    before: called with the batch index b before step b (an LR schedule sets the optimizer's LR there).
    """
    step.model.train()
    starts = batch_starts(len(perm), step.batch_size)
    step.sums.zero_()
    try:
        for b in range(start, len(starts)):
            s = starts[b]
            if before is not None:
                before(b)
            step(perm[s:s + step.batch_size], None if draws is None else draws[:, s:s + step.batch_size])
            if stop is not None and stop.set:
                return b + 1
        return len(starts)
    finally:
        sums += step.sums
