"""Deformable convolution: torchvision's kernel vs the pure-PyTorch backend, against a plain conv.

    python Testing/benchmarks/bench_deform_conv.py [--device cpu|cuda] [--repeats 5]

Prints, per shape, forward and forward+backward times and their ratio to a plain conv2d of the same
size measured in the same run; the faster backend per device is what "auto" should pick.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench_utils import interleaved_medians
from TSCDenoiseLib.networks.deform_conv import deform_conv2d_torch, torchvision_deform_conv2d

SHAPES = [(2, 16, 64, 64), (8, 128, 32, 32), (4, 128, 64, 64)]


def _inputs(n, c, h, w, device):
    g = torch.Generator().manual_seed(0)
    make = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(device).requires_grad_()
    return make(n, c, h, w), make(n, 18, h, w, scale=2.0), make(c, c, 3, 3, scale=0.05), make(c), torch.rand(n, 9, h, w, generator=g).to(device).requires_grad_()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    kernels = {"torch": deform_conv2d_torch}
    if torchvision_deform_conv2d() is not None:
        kernels["torchvision"] = torchvision_deform_conv2d()
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    for shape in SHAPES:
        x, offset, weight, bias, mask = _inputs(*shape, device)
        forward = {"conv2d": lambda: F.conv2d(x, weight, bias, padding=1)}
        train = {"conv2d": lambda: F.conv2d(x, weight, bias, padding=1).sum().backward()}
        for name, kernel in kernels.items():
            forward[name] = lambda k=kernel: k(x, offset, weight, bias, padding=1, mask=mask)
            train[name] = lambda k=kernel: k(x, offset, weight, bias, padding=1, mask=mask).sum().backward()
        with torch.no_grad():
            fwd = interleaved_medians(forward, args.repeats, device)
        bwd = interleaved_medians(train, args.repeats, device)
        print(f"\nshape {shape}")
        print(f"{'':12s} {'fwd ms':>9s} {'x conv':>7s} {'fwd+bwd ms':>11s} {'x conv':>7s}")
        for name in forward:
            print(f"{name:12s} {fwd[name] * 1e3:9.2f} {fwd[name] / fwd['conv2d']:7.1f} "
                  f"{bwd[name] * 1e3:11.2f} {bwd[name] / bwd['conv2d']:7.1f}")
        if "torchvision" in fwd:
            faster = "torch" if fwd["torch"] < fwd["torchvision"] else "torchvision"
            print(f"faster forward on {device}: {faster} "
                  f"(torchvision/torch = {fwd['torchvision'] / fwd['torch']:.2f}x fwd, {bwd['torchvision'] / bwd['torch']:.2f}x fwd+bwd)")


if __name__ == "__main__":
    main()
