"""Cost of the default TSC-Net: parameters, FLOPs per 512x512 slice, and training activation memory.

    python Testing/benchmarks/bench_model_cost.py [--batch 8] [--size 512]

Activation memory is the bytes autograd keeps for the backward pass of one training step (unique
storages caught with saved_tensors_hooks), plus weights, gradients and Adam's two moments: on a GPU
this is what the step needs beyond the CUDA context. Counted for each deformable-convolution
backend, since they save different tensors. The FLOP count is the baseline for a GPU's achieved
fraction of peak: seconds per slice x peak FLOP/s vs FLOPs per slice.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from TSCDenoiseLib.networks import TSCNet
from TSCDenoiseLib.networks.deform_conv import torchvision_deform_conv2d

GIB = 2**30


def saved_activation_bytes(model: TSCNet, x: torch.Tensor) -> int:
    """Bytes of the unique tensors autograd saves for backward during one forward pass."""
    storages = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    storages[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TSCNet()
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.set_dcn_backend("torch")
        model(torch.rand(1, 1, args.size, args.size))
    flops = counter.get_total_flops()
    print(f"TSCNet default config {model.config}")
    print(f"parameters: {params / 1e6:.2f} M ({params * 4 / 2**20:.1f} MiB fp32)")
    print(f"forward FLOPs per {args.size}x{args.size} slice: {flops / 1e9:.1f} GFLOP "
          f"(multiply-add = 2 FLOPs; grid_sample not counted)")
    weights_and_optimizer = params * 4 * 4  # weights, grads, Adam m and v
    backends = ["torch"] + (["torchvision"] if torchvision_deform_conv2d() is not None else [])
    x = torch.rand(args.batch, 1, args.size, args.size)
    for backend in backends:
        model.set_dcn_backend(backend)
        activations = saved_activation_bytes(model, x)
        total = activations + weights_and_optimizer
        print(f"training step, batch {args.batch} x {args.size}^2, DCN backend {backend}: saved activations "
              f"{activations / GIB:.2f} GiB + weights/grads/Adam {weights_and_optimizer / GIB:.3f} GiB = "
              f"{total / GIB:.2f} GiB (goal < 6 GiB)")


if __name__ == "__main__":
    main()
