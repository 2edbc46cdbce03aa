#!/usr/bin/python3
"""Exports the demo's trained DiT (models/digits_dit.bin) as a TorchScript module
(models/digits_dit.pt) that LibTorch loads with torch::jit::load.

    scripts/deps.sh train
    /usr/bin/python3 models/export_torchscript.py

The module is train_digits_dit.py's DiT with the weights of digits_dit.bin (the
file the C++ forward pass reads), traced, and checked to serve any batch size: forward(x [B, channels, frames, size, size] float32, sigma [B] float32,
label [B] int64) -> velocity, like x. Before saving, its output on the stored
check inputs (digits_dit_check.bin) is compared with the stored output.
Debian's python3-torch is the same 1.13 as libtorch-dev, which loads the file.
"""
import hashlib
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_digits_dit as training  # noqa: E402  (the model's definition)


def read_tensor_file(path):
    """The ECTNSR01 container train_digits_dit.py writes: (ints, tensors)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != training.MAGIC:
        raise SystemExit("%s: not an ECTNSR01 tensor file" % path)
    at = 8

    def take(fmt):
        nonlocal at
        values = struct.unpack_from(fmt, data, at)
        at += struct.calcsize(fmt)
        return values

    def name():
        (length,) = take("<I")
        text = data[at:at + length].decode("ascii")
        take("%ds" % length)
        return text

    ints, tensors = {}, {}
    for _ in range(take("<I")[0]):
        key = name()
        ints[key] = take("<q")[0]
    for _ in range(take("<I")[0]):
        key = name()
        (ndim,) = take("<I")
        shape = take("<%dI" % ndim)
        count = 1
        for d in shape:
            count *= d
        values = take("<%df" % count)
        tensors[key] = torch.tensor(values, dtype=torch.float32).reshape(shape)
    return ints, tensors


def main():
    weights = os.path.join(HERE, "digits_dit.bin")
    out = os.path.join(HERE, "digits_dit.pt")
    shape, state = read_tensor_file(weights)
    model = training.DiT(frames=shape["frames"], size=shape["height"], channels=shape["channels"],
                         patch=shape["patch"], dim=shape["dim"], depth=shape["depth"], heads=shape["heads"],
                         mlp_ratio=shape["hidden"] // shape["dim"], classes=shape["classes"],
                         freq_dim=shape["freq_dim"])
    model.load_state_dict(state)
    model.eval()
    check_ints, check = read_tensor_file(os.path.join(HERE, "digits_dit_check.bin"))
    label = torch.tensor([check_ints["label0"], check_ints["label1"]], dtype=torch.int64)
    with torch.no_grad():
        # Traced (the attention's tuple unpacking does not script); the batch
        # size stays a traced value, checked below on batches of 1 to 3.
        scripted = torch.jit.trace(model, (check["input"], check["sigma"], label), check_trace=False)
        got = scripted(check["input"], check["sigma"], label)
        error = (got - check["output"]).abs().max().item()
        print("traced module against the stored check output: max |difference| %.3g" % error)
        if not error < 1e-4:
            raise SystemExit("the traced module does not reproduce digits_dit_check.bin")
        generator = torch.Generator().manual_seed(7)
        for batch in (1, 2, 3):
            x = torch.randn((batch,) + tuple(check["input"].shape[1:]), generator=generator)
            sigma = torch.rand(batch, generator=generator)
            labels = torch.randint(0, shape["classes"] + 1, (batch,), generator=generator)
            difference = (scripted(x, sigma, labels) - model(x, sigma, labels)).abs().max().item()
            print("batch %d: traced against eager: max |difference| %.3g" % (batch, difference))
            if not difference < 1e-5:
                raise SystemExit("the traced module is wrong for batch %d" % batch)

    scripted.save(out)
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(out + ".sha256", "w") as f:
        f.write("%s  %s\n" % (digest, os.path.basename(out)))
    print("wrote %s (%d bytes), sha256 %s" % (out, os.path.getsize(out), digest))


if __name__ == "__main__":
    main()
