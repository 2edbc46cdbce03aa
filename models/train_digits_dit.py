#!/usr/bin/python3
"""Trains the small video diffusion transformer of easycache's demo and exports it.

Data: the 8x8 handwritten digits that Debian's python3-sklearn ships
(sklearn/datasets/data/digits.csv.gz), made into clips of a digit moving in a
straight line across a larger canvas. Model: a DiT (patch embedding, adaLN-Zero
transformer blocks conditioned on the timestep and the class, a null class for
classifier-free guidance, unpatchify). Objective: flow matching with the Wan2.1
convention x_sigma = (1 - sigma) x0 + sigma noise, target v = noise - x0.

    scripts/deps.sh train
    /usr/bin/python3 models/train_digits_dit.py            # trains, exports models/digits_dit.bin

Deterministic: fixed seeds, one data order, torch.use_deterministic_algorithms,
a fixed thread count (--threads, default 1). docs/model.md has the architecture,
the file format and the run's time and loss.
"""
import argparse
import hashlib
import math
import os
import struct
import sys
import time

# One thread everywhere by default (set before numpy and torch load OpenBLAS): on a
# shared 2-core machine, spinning worker threads made a step 5x slower, not faster.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------- data

def load_digits_uint8():
    """The 1797 8x8 digits (values 0..16) and their labels, from python3-sklearn's data folder."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def make_clips(images, labels, index, generator, frames, size):
    """Clips [B, 1, frames, size, size] in [-1, 1]: digit `index[b]` moving one pixel a frame
    in one of the 8 directions, starting where its whole path stays on the canvas."""
    batch = index.shape[0]
    digit = images.shape[-1]
    room = size - digit
    travel = frames - 1
    directions = torch.tensor([[dy, dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)])
    velocity = directions[torch.randint(0, 8, (batch,), generator=generator)]
    start = torch.empty(batch, 2, dtype=torch.long)
    for axis in range(2):
        still = velocity[:, axis] == 0
        span = torch.where(still, torch.full((batch,), room + 1), torch.full((batch,), room + 1 - travel))
        offset = (torch.rand(batch, generator=generator) * span).long()
        start[:, axis] = torch.where(velocity[:, axis] < 0, offset + travel, offset)
    clips = torch.zeros(batch, 1, frames, size, size)
    source = torch.from_numpy(images[index.numpy()])
    for f in range(frames):
        position = start + f * velocity
        for b in range(batch):
            y, x = int(position[b, 0]), int(position[b, 1])
            clips[b, 0, f, y:y + digit, x:x + digit] = source[b]
    return clips * 2 - 1, torch.from_numpy(labels[index.numpy()])


# ----------------------------------------------------------------------------- model

def sincos_1d(dim, positions):
    half = dim // 2
    omega = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float64) / half))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_3d(dim, frames, rows, cols):
    """Fixed 3-D positional embedding [frames*rows*cols, dim]: a third of the channels each for t, y, x."""
    part = dim // 3 // 2 * 2
    rest = dim - 2 * part
    t, y, x = torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.cat([sincos_1d(rest, t.flatten()), sincos_1d(part, y.flatten()), sincos_1d(part, x.flatten())],
                     dim=1).float()


def timestep_embedding(sigma, dim):
    """Sinusoidal embedding of t = 1000 sigma (as Wan2.1): [cos | sin] of t * 10000^(-i/half).
    Computed in float64, then rounded to float32, so that the C++ forward can match it exactly
    (cos of arguments up to 1000 in float32 would differ between libraries by ~1e-4)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = 1000.0 * sigma.double()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).float()


def modulate(x, shift, scale):
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.ada = nn.Linear(dim, 6 * dim)

    def forward(self, x, c):
        b, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c)).chunk(6, dim=1)
        h = modulate(self.norm1(x), shift1, scale1)
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # einsum: torch 1.13's CPU bmm on a transposed operand is several times slower.
        attention = torch.softmax(torch.einsum("bhnd,bhmd->bhnm", q, k) / math.sqrt(d // self.heads), dim=-1)
        h = torch.einsum("bhnm,bhmd->bnhd", attention, v).reshape(b, n, d)
        x = x + gate1[:, None, :] * self.proj(h)
        h = modulate(self.norm2(x), shift2, scale2)
        x = x + gate2[:, None, :] * self.fc2(F.gelu(self.fc1(h), approximate="tanh"))
        return x


class DiT(nn.Module):
    """Video DiT on [B, channels, frames, size, size] latents; predicts the flow velocity."""

    def __init__(self, frames, size, channels, patch, dim, depth, heads, mlp_ratio, classes, freq_dim):
        super().__init__()
        self.shape = dict(frames=frames, height=size, width=size, channels=channels, patch=patch, dim=dim,
                          depth=depth, heads=heads, hidden=mlp_ratio * dim, classes=classes, freq_dim=freq_dim)
        self.patch, self.channels, self.frames, self.size, self.freq_dim = patch, channels, frames, size, freq_dim
        self.patch_embed = nn.Linear(channels * patch * patch, dim)
        self.register_buffer("pos_embed", sincos_3d(dim, frames, size // patch, size // patch))
        self.time_fc1 = nn.Linear(freq_dim, dim)
        self.time_fc2 = nn.Linear(dim, dim)
        self.class_embed = nn.Embedding(classes + 1, dim)  # index `classes` is the null class
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio * dim) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(dim, 2 * dim)
        self.final_linear = nn.Linear(dim, channels * patch * patch)
        self.initialize()

    def initialize(self):
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.class_embed.weight, std=0.02)
        nn.init.normal_(self.time_fc1.weight, std=0.02)
        nn.init.normal_(self.time_fc2.weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(block.ada.weight)
            nn.init.zeros_(block.ada.bias)
        for layer in (self.final_ada, self.final_linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def patchify(self, x):
        b, c, t, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)
        return x.reshape(b, t * (h // p) * (w // p), c * p * p)

    def unpatchify(self, tokens):
        b = tokens.shape[0]
        c, t, p, g = self.channels, self.frames, self.patch, self.size // self.patch
        x = tokens.reshape(b, t, g, g, c, p, p).permute(0, 4, 1, 2, 5, 3, 6)
        return x.reshape(b, c, t, g * p, g * p)

    def forward(self, x, sigma, label):
        cond = self.time_fc2(F.silu(self.time_fc1(timestep_embedding(sigma, self.freq_dim))))
        cond = cond + self.class_embed(label)
        h = self.patch_embed(self.patchify(x)) + self.pos_embed[None]
        for block in self.blocks:
            h = block(h, cond)
        shift, scale = self.final_ada(F.silu(cond)).chunk(2, dim=1)
        return self.unpatchify(self.final_linear(modulate(self.final_norm(h), shift, scale)))


# ----------------------------------------------------------------------------- export

MAGIC = b"ECTNSR01"


def write_tensor_file(path, ints, tensors):
    """Little-endian container: magic, int count, (name, int64)*, tensor count,
    (name, ndim, dims, float32 data row-major)*. Names are uint32-length-prefixed ASCII."""
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<I", len(ints)))
        for name, value in ints.items():
            f.write(struct.pack("<I", len(name)) + name.encode("ascii") + struct.pack("<q", int(value)))
        f.write(struct.pack("<I", len(tensors)))
        for name, tensor in tensors.items():
            array = tensor.detach().cpu().contiguous().numpy().astype("<f4")
            f.write(struct.pack("<I", len(name)) + name.encode("ascii"))
            f.write(struct.pack("<I", array.ndim) + struct.pack("<%dI" % array.ndim, *array.shape))
            f.write(array.tobytes())


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def export(model, path):
    write_tensor_file(path, model.shape, dict(model.state_dict()))
    with open(path + ".sha256", "w") as f:
        f.write("%s  %s\n" % (sha256(path), os.path.basename(path)))


def export_check(model, path):
    """A stored forward pass for the C++ test: two inputs, one conditional and one null-class call."""
    generator = torch.Generator().manual_seed(1234)
    shape = (2, model.channels, model.frames, model.size, model.size)
    x = torch.randn(shape, generator=generator)
    sigma = torch.tensor([0.7, 0.2])
    label = torch.tensor([3, model.shape["classes"]])
    with torch.no_grad():
        out = model(x, sigma, label)
    write_tensor_file(path, {"label0": int(label[0]), "label1": int(label[1])},
                      {"input": x, "sigma": sigma, "output": out})


# ----------------------------------------------------------------------------- sampling (for a look)

def shifted_sigmas(steps, shift):
    t = 1.0 - torch.arange(steps + 1, dtype=torch.float64) / steps
    return shift * t / (1 + (shift - 1) * t)


@torch.no_grad()
def sample(model, labels, steps=50, shift=5.0, guidance=5.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    x = torch.randn((n, model.channels, model.frames, model.size, model.size), generator=generator)
    null = torch.full_like(labels, model.shape["classes"])
    sigmas = shifted_sigmas(steps, shift)
    for i in range(steps):
        s = torch.full((n,), float(sigmas[i]))
        v_cond, v_uncond = model(x, s, labels), model(x, s, null)
        x = x + float(sigmas[i + 1] - sigmas[i]) * (v_uncond + guidance * (v_cond - v_uncond))
    return x


def save_preview(clips, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, _, frames, _, _ = clips.shape
    fig, axes = plt.subplots(n, frames, figsize=(frames * 0.8, n * 0.8))
    for i in range(n):
        for f in range(frames):
            axes[i, f].imshow(clips[i, 0, f].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[i, f].axis("off")
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- training

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema", type=float, default=0.999, help="decay of the exported weight average")
    parser.add_argument("--label-dropout", type=float, default=0.1, help="fraction of null-class labels")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(HERE, "digits_dit.bin"))
    parser.add_argument("--log", default=os.path.join(HERE, "digits_dit_training.csv"))
    parser.add_argument("--preview", default="", help="PNG of sampled clips after training (needs matplotlib)")
    parser.add_argument("--time-only", type=int, default=0, help="time this many steps and exit")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(args.seed)

    images, labels = load_digits_uint8()
    classes = 10
    model = DiT(args.frames, args.size, 1, args.patch, args.dim, args.depth, args.heads, 4, classes, 256)
    ema = DiT(args.frames, args.size, 1, args.patch, args.dim, args.depth, args.heads, 4, classes, 256)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    parameters = sum(p.numel() for p in model.parameters())
    print("model: %d parameters, %d tokens" % (parameters, model.pos_embed.shape[0]), flush=True)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = 200

    def learning_rate(step):  # linear warm-up, then cosine decay to 5%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    log = None if args.time_only else open(args.log, "w")
    if log:
        log.write("step,loss,lr,seconds\n")
    started = time.time()
    running = 0.0
    total = args.time_only or args.steps
    for step in range(total):
        index = torch.randint(0, images.shape[0], (args.batch,), generator=generator)
        x0, label = make_clips(images, labels, index, generator, args.frames, args.size)
        drop = torch.rand(args.batch, generator=generator) < args.label_dropout
        label = torch.where(drop, torch.full_like(label, classes), label)
        sigma = torch.rand(args.batch, generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        s = sigma[:, None, None, None, None]
        loss = F.mse_loss(model((1 - s) * x0 + s * noise, sigma, label), noise - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            decay = min(args.ema, (step + 1) / (step + 10))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.mul_(decay).add_(p, alpha=1 - decay)
        running += loss.item()
        if (step + 1) % 100 == 0:
            elapsed = time.time() - started
            if log:
                log.write("%d,%.6f,%.6g,%.1f\n" % (step + 1, running / 100, scheduler.get_last_lr()[0], elapsed))
                log.flush()
            print("step %d/%d  loss %.4f  %.0f s" % (step + 1, total, running / 100, elapsed), flush=True)
            running = 0.0
    elapsed = time.time() - started
    if args.time_only:
        print("%.3f s per step" % (elapsed / args.time_only))
        return
    print("trained %d steps in %.0f s" % (args.steps, elapsed), flush=True)

    ema.eval()
    # The loss of the exported (EMA) weights on a fixed evaluation set of 2048 clips.
    evaluation = torch.Generator().manual_seed(99)
    losses = []
    with torch.no_grad():
        for _ in range(16):
            index = torch.randint(0, images.shape[0], (128,), generator=evaluation)
            x0, label = make_clips(images, labels, index, evaluation, args.frames, args.size)
            sigma = torch.rand(128, generator=evaluation)
            noise = torch.randn(x0.shape, generator=evaluation)
            s = sigma[:, None, None, None, None]
            losses.append(F.mse_loss(ema((1 - s) * x0 + s * noise, sigma, label), noise - x0).item())
    print("final loss of the exported weights (2048 fixed clips): %.4f" % (sum(losses) / len(losses)), flush=True)

    export(ema, args.out)
    export_check(ema, os.path.join(os.path.dirname(args.out), "digits_dit_check.bin"))
    print("wrote %s (%d bytes, sha256 %s)" % (args.out, os.path.getsize(args.out), sha256(args.out)), flush=True)
    if args.preview:
        save_preview(sample(ema, torch.arange(10)), args.preview)
        print("wrote %s" % args.preview)


if __name__ == "__main__":
    sys.exit(main())
