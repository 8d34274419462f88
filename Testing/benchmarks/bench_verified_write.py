"""What verified outputs cost: `write_ct` / `write_new_dicom_series` (staged, fsynced, read back, renamed)
against SimpleITK's / pydicom's bare write of the same volume, interleaved; prints the ratios.

    python Testing/benchmarks/bench_verified_write.py --shape 64 512 512 --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from TSCDenoiseLib.io import VolumeGeometry, write_ct, write_new_dicom_series  # noqa: E402
from TSCDenoiseLib.io import dicom as dicom_io  # noqa: E402


def bare_image(volume: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume)
    VolumeGeometry().apply_to(image)
    sitk.WriteImage(image, str(path), True)


def bare_dicom(volume: np.ndarray, folder: Path) -> None:
    folder.mkdir()
    dicom_io._write_new_slices(volume, VolumeGeometry(), folder, "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 512, 512))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: the system temp folder)")
    args = parser.parse_args()
    volume = (np.random.default_rng(0).normal(0, 20, args.shape) - 500).astype(np.float32)
    cases = {
        ".nii.gz": (lambda d: bare_image(volume, d / "a.nii.gz"), lambda d: write_ct(volume, VolumeGeometry(), d / "a.nii.gz")),
        ".nrrd": (lambda d: bare_image(volume, d / "a.nrrd"), lambda d: write_ct(volume, VolumeGeometry(), d / "a.nrrd")),
        "DICOM": (lambda d: bare_dicom(volume, d / "s"), lambda d: write_new_dicom_series(volume, VolumeGeometry(), d / "s")),
    }
    times = {(name, kind): [] for name in cases for kind in ("bare", "verified")}
    for _ in range(args.repeats):
        for name, (bare, verified) in cases.items():
            for kind, write in (("bare", bare), ("verified", verified)):
                folder = Path(tempfile.mkdtemp(dir=args.dir))
                started = time.perf_counter()
                write(folder)
                times[(name, kind)].append(time.perf_counter() - started)
                shutil.rmtree(folder)
    print(f"volume {' x '.join(map(str, args.shape))} float32, min of {args.repeats} interleaved runs")
    for name in cases:
        bare, verified = min(times[(name, "bare")]), min(times[(name, "verified")])
        print(f"{name:8s} bare {bare:7.3f} s   verified {verified:7.3f} s   ratio {verified / bare:5.2f}")


if __name__ == "__main__":
    main()
