"""Does storing a checkpoint's weights in float16 change what it outputs? Measured before shipping one so.

    python training/scripts/check_half_precision.py MODEL.pt [--out HALF.pt] [--metadata KEY=VALUE ...]

Denoises the bundled sample's low-dose test slab with the checkpoint as it is and with a float16-stored
copy (loaded back as float32, as every loader does), and prints the PSNR of each against the normal dose
([-160, 240] HU) and the largest and mean absolute difference in HU between the two outputs. With --out
the float16 copy is kept there (written atomically; an existing file is not replaced). --metadata adds or
replaces entries of the copy's metadata (VALUE is read as JSON where it parses, else kept as text), e.g.
the lineage's recipe for a default model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def metadata_entry(item: str) -> tuple:
    """KEY=VALUE as (key, value): the value as JSON where it parses (numbers, true/false), else as text."""
    key, separator, value = item.partition("=")
    if not separator or not key:
        raise SystemExit(f"--metadata {item!r}: write KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> int:
    from TSCDenoiseLib.core.checkpoint import load_model, read_checkpoint, save_model
    from TSCDenoiseLib.core.inference import denoise_volume
    from TSCDenoiseLib.core.metrics import psnr
    from TSCDenoiseLib.core.resources import sample_path
    from TSCDenoiseLib.io import read_ct

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--out", type=Path, help="keep the float16 copy here")
    parser.add_argument("--metadata", nargs="+", default=[], metavar="KEY=VALUE",
                        help="entries to add to (or replace in) the copy's metadata")
    args = parser.parse_args()
    extra = dict(metadata_entry(item) for item in args.metadata)

    low, _ = read_ct(sample_path("ldct_test.nii.gz"))
    normal, _ = read_ct(sample_path("ndct_test.nii.gz"))
    payload = read_checkpoint(args.model)
    with tempfile.TemporaryDirectory() as folder:
        half_path = args.out or Path(folder) / "half.pt"
        model = load_model(args.model)
        save_model(model, half_path, role=payload["role"], hu_window=payload["hu_window"], half_precision=True,
                   **{**payload.get("metadata", {}), **extra})
        outputs = {name: denoise_volume(low.astype(np.float32), load_model(path), amp=False)
                   for name, path in (("float32", args.model), ("float16-stored", half_path))}
        sizes = {"float32": args.model.stat().st_size, "float16-stored": half_path.stat().st_size}
    for name, output in outputs.items():
        print(f"{name:15s} {sizes[name] / 2**20:6.2f} MiB  PSNR {psnr(output, normal):.4f} dB")
    difference = np.abs(outputs["float32"] - outputs["float16-stored"])
    print(f"output difference: max {difference.max():.3f} HU, mean {difference.mean():.4f} HU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
