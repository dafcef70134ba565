"""ViT-Small of appendix F (docs/protocol.md section 3), as the authors trained it: lucidrains' "ViT for small
datasets" (vit-pytorch's vit_for_small_dataset.py, via kentaroy47/vision-transformers-cifar10) with
two LayerNorms added to every feed-forward block (the authors' vision_transformer/models/vit_small_si.py).

  x (N, C, H, W), H = W = image_size, p = patch_size, P = (H/p)(W/p) patches, D = dim
  SPT: cat(x, its 4 one-pixel shifts)                    (N, 5C, H, W)
       cut into p x p patches, flattened (p1 p2 c)       (N, P, 5C p^2)
       LayerNorm -> Linear(5C p^2 -> D)                  (N, P, D)
  prepend class token, add positional embedding, Dropout (N, P + 1, D)
  depth x pre-norm block:
    x = x + LSA(x):  LayerNorm -> qkv (no bias), heads x dim_head each;
                     softmax(exp(t) q k^T, diagonal masked) v -> Linear(heads dim_head -> D) -> Dropout
    x = x + FF(x):   LayerNorm -> Linear(D -> mlp_dim) -> LayerNorm -> GELU -> Dropout
                     -> Linear(mlp_dim -> D) -> LayerNorm -> Dropout
  class token -> LayerNorm -> Linear(D -> classes)       (N, classes)

The shifts are those of lucidrains' SPT, which the authors trained with: right, left, down and up by
one pixel, zeros shifted in. (The SPT paper, Lee et al. 2021, shifts diagonally; the code does not.)
LSA (locality self-attention, same paper) has a learnable temperature t, initialised to
log(dim_head^-0.5) so it starts as the usual 1/sqrt(d) scaling, and masks each token's attention to
itself with -finfo.max, so after the softmax that weight is exactly 0.

Deliberate departures from vit-pytorch 1.26.14 and matches of the authors' older copy: no dropout on
the attention weights (vit-pytorch added one later; the authors' LSA has none), and an input whose
size is not image_size is an error (vit-pytorch silently slices the positional embedding for smaller
images). Modules are created in the order of the authors' code, so the same seed draws the same
initial weights: default torch init for the Linears, N(0, 1) for the class token and positional
embedding. Not scale-invariant: it trains off the sphere with Adam (the practical recipe).

Defaults (dim 512, depth 6, 8 heads of 64, MLP 512, dropout 0.1, patch 4): 9,634,800 parameters on
CIFAR-10 (32x32 RGB, 10 classes); tests/test_vit.py checks the output against vit-pytorch's with the
two LayerNorms patched in, weights copied over by an explicit map of state_dict keys.
"""
import torch
import torch.nn.functional as F
from torch import nn

# F.pad(x, (left, right, top, bottom)) with a -1 crops one side: x moved right, left, down, up by one
# pixel, zero in the row or column it leaves. Order and signs as in vit-pytorch's SPT (channel order).
SHIFTS = ((1, -1, 0, 0), (-1, 1, 0, 0), (0, 0, 1, -1), (0, 0, -1, 1))


class ShiftedPatchTokens(nn.Module):
    """SPT: (N, C, H, W) -> (N, P, dim) patch tokens of the image and its four shifted copies."""

    def __init__(self, in_channels, patch_size, dim):
        super().__init__()
        self.patch_size = patch_size
        patch_dim = 5 * in_channels * patch_size ** 2
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)

    def forward(self, x):
        x = torch.cat([x, *(F.pad(x, s) for s in SHIFTS)], dim=1)  # (N, 5C, H, W)
        n, c, h, w, p = *x.shape, self.patch_size
        # 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)': patches row-major, channels fastest within a patch,
        # the layout the authors' checkpoints (and proj's weight columns) assume
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        x = x.reshape(n, (h // p) * (w // p), p * p * c)
        return self.proj(self.norm(x))


class LSA(nn.Module):
    """Pre-norm locality self-attention: (N, T, dim) -> (N, T, dim), the residual branch only."""

    def __init__(self, dim, heads, dim_head, dropout):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.log(torch.tensor(dim_head ** -0.5)))
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)
        self.dropout = nn.Dropout(dropout)

    def attention(self, x):
        """Attention weights (N, heads, T, T), rows summing to 1 with a zero diagonal, and the values
        (N, heads, T, dim_head)."""
        n, t, _ = x.shape
        # qkv's output is [q | k | v], each (heads dim_head) with the head index slower
        q, k, v = self.qkv(self.norm(x)).reshape(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        dots = q @ k.transpose(-1, -2) * self.temperature.exp()
        # -max rather than -inf: exp underflows to exactly 0 all the same, and no inf enters the graph
        eye = torch.eye(t, dtype=torch.bool, device=x.device)
        dots = dots.masked_fill(eye, -torch.finfo(dots.dtype).max)
        return dots.softmax(dim=-1), v

    def forward(self, x):
        attn, v = self.attention(x)
        out = (attn @ v).transpose(1, 2).flatten(2)  # (N, T, heads dim_head), heads slower
        return self.dropout(self.out(out))


class FeedForward(nn.Module):
    """Pre-norm MLP branch: (N, T, dim) -> (N, T, dim). norm1 and norm2 are the authors' addition to
    vit_for_small_dataset's LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim, hidden_dim, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)  # stateless: the same module serves both places

    def forward(self, x):
        h = self.dropout(F.gelu(self.norm1(self.fc1(self.norm(x)))))
        return self.dropout(self.norm2(self.fc2(h)))


class Block(nn.Module):
    def __init__(self, dim, heads, dim_head, mlp_dim, dropout):
        super().__init__()
        self.attn = LSA(dim, heads, dim_head, dropout)
        self.ff = FeedForward(dim, mlp_dim, dropout)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.ff(x)


class ViTSmall(nn.Module):
    """ViT-Small for image_size x image_size inputs of in_channels channels (built as every registry
    model: ViTSmall(num_classes=N, in_channels=C, **model_args))."""

    def __init__(self, num_classes=10, in_channels=3, image_size=32, patch_size=4, dim=512, depth=6,
                 heads=8, dim_head=64, mlp_dim=512, dropout=0.1, emb_dropout=0.1):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        self.image_size = image_size
        # creation order = the authors' (RNG draws): SPT, positional embedding, class token, blocks, head
        self.spt = ShiftedPatchTokens(in_channels, patch_size, dim)
        self.pos_embedding = nn.Parameter(torch.randn(1, (image_size // patch_size) ** 2 + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):  # x: (N, C, H, W) -> logits (N, classes)
        if tuple(x.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(f"ViTSmall was built for {self.image_size}x{self.image_size} images, got "
                             f"{x.shape[-2]}x{x.shape[-1]} (model argument image_size)")
        x = self.spt(x)                                                        # (N, P, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (N, P + 1, D)
        x = self.dropout(x + self.pos_embedding)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))
