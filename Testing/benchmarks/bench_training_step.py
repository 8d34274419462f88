"""Training-step throughput of the student's candidates on the CPU, as ratios in one interleaved run.

    python Testing/benchmarks/bench_training_step.py [--repeats 5] [--threads 2]

One step = forward, L1 loss, backward, AdamW update of a TSCNet on a batch of 8 random 64 x 64
patches (the bundle's default batch). Candidates: width 32 (the default) in fp32, channels-last,
bf16 autocast (CPUs with AVX-512 BF16 / AMX), and width 64 in fp32. Each runs alternately with
the others (load hits all alike); the minimum per candidate counts. Prints patches/s and the ratio
to width 32 fp32, plus the final loss after a few steps as a sanity check that bf16 still learns.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from TSCDenoiseLib.networks import TSCNet

BATCH, PATCH = 8, 64


def make_candidate(width: int, channels_last: bool, bf16: bool):
    torch.manual_seed(0)
    net = TSCNet(base_channels=width, num_attention_blocks=6, num_dems=2).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(BATCH, 1, PATCH, PATCH, generator=generator)
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=generator)
    if channels_last:
        clean, noisy = clean.contiguous(memory_format=torch.channels_last), noisy.contiguous(memory_format=torch.channels_last)
    losses = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with context:
            output = net(noisy)
        loss = F.l1_loss(output.float(), clean)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))

    return step, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    candidates = {
        "width 32 fp32": make_candidate(32, False, False),
        "width 32 channels-last": make_candidate(32, True, False),
        "width 32 bf16 autocast": make_candidate(32, False, True),
        "width 64 fp32": make_candidate(64, False, False),
    }
    for step, _ in candidates.values():
        step()  # warm-up
    best = {name: float("inf") for name in candidates}
    for _ in range(args.repeats):
        for name, (step, _) in candidates.items():
            started = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - started)
    baseline = best["width 32 fp32"]
    print(f"threads {args.threads}, batch {BATCH} x {PATCH}^2, minimum of {args.repeats} interleaved steps")
    print("| candidate | patches/s | ratio to width 32 fp32 | loss after the run |\n| --- | ---: | ---: | ---: |")
    for name, seconds in best.items():
        print(f"| {name} | {BATCH / seconds:.1f} | {baseline / seconds:.2f} | {candidates[name][1][-1]:.4f} |")


if __name__ == "__main__":
    main()
