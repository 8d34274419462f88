"""Rebuild the bundled sample data from Debian's ``invesalius-examples`` package.

    python Resources/SampleData/make_sample_data.py [--source PATH] [--overwrite]

The source is the real head CT ``Cranium.inv3`` (InVesalius, GPL-2): a gzip tar whose
``main.plist`` describes ``matrix.dat``, a raw int16 (Z, Y, X) volume in HU. ``--source``
takes the ``.deb``, the ``.inv3`` or a folder holding either; without it the package is
fetched with ``apt-get download invesalius-examples`` (needs Debian's package registry,
only here: nothing at run time downloads data).

Writes next to this script: ``cranium/{ndct,ldct}_{training,validation,test}.nii.gz`` (int16 HU,
the axial slabs z 0-69 / 74-85 / 90-107 with 4-slice gaps so no split sees its neighbour's
anatomy), ``datalist.json`` and ``preview.png`` (NDCT / simulated LDCT / difference).
The low-dose volumes are simulated quarter dose (``TSCDenoiseLib.training.simulation``, fan beam,
I0 = 2.25e5, electronic noise variance 8, fixed seeds), so a rebuild is bit-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import plistlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a checkout without installing

from TSCDenoiseLib.io import VolumeGeometry, write_ct  # noqa: E402
from TSCDenoiseLib.training.simulation import simulate_low_dose  # noqa: E402

SPLITS = {"training": (0, 70), "validation": (74, 86), "test": (90, 108)}
DOSE = 0.25
SEED = 20261124
PREVIEW_SLICE = ("validation", 6)
SOFT_TISSUE_WINDOW = (-160.0, 240.0)  # level 40, width 400 HU


def find_or_fetch_inv3(source: Path | None, workdir: Path) -> Path:
    """Path of Cranium.inv3, from ``source`` or from a freshly downloaded package."""
    if source is None:
        subprocess.run(["apt-get", "download", "invesalius-examples"], cwd=workdir, check=True)
        source = next(workdir.glob("invesalius-examples_*.deb"))
    if source.is_dir():
        found = sorted(source.rglob("Cranium.inv3")) or sorted(source.rglob("invesalius-examples_*.deb"))
        if not found:
            raise SystemExit(f"No Cranium.inv3 or invesalius-examples .deb under {source}.")
        source = found[0]
    if source.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(source), str(workdir / "deb")], check=True)
        source = next((workdir / "deb").rglob("Cranium.inv3"))
    return source


def read_inv3(path: Path, workdir: Path) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """(volume int16 (Z, Y, X) in HU, spacing (x, y, z) mm, sha256 of the raw matrix)."""
    with tarfile.open(path, "r:gz") as archive:
        archive.extractall(workdir / "inv3", filter="data")
    plist_path = next((workdir / "inv3").rglob("main.plist"))
    with open(plist_path, "rb") as handle:
        meta = plistlib.load(handle)
    matrix = meta["matrix"]
    shape = tuple(int(n) for n in matrix["shape"])
    raw = (plist_path.parent / matrix["filename"]).read_bytes()
    volume = np.frombuffer(raw, dtype=np.dtype(matrix["dtype"])).reshape(shape).astype(np.int16)
    if meta.get("modality") != "CT" or volume.min() < -1100 or volume.max() > 4000:
        raise SystemExit(f"{path} does not hold the expected CT volume in HU.")
    spacing = tuple(float(s) for s in meta["spacing"])
    return volume, spacing, hashlib.sha256(raw).hexdigest()


def write_preview(ndct: np.ndarray, ldct: np.ndarray, path: Path) -> None:
    """NDCT | LDCT | difference (LDCT - NDCT, +-100 HU) side by side, 8-bit PNG."""
    import SimpleITK as sitk

    low, high = SOFT_TISSUE_WINDOW
    window = lambda image: np.clip((image - low) / (high - low), 0.0, 1.0)
    difference = np.clip((ldct - ndct) / 200.0 + 0.5, 0.0, 1.0)
    panel = np.concatenate([window(ndct), window(ldct), difference], axis=1)
    sitk.WriteImage(sitk.GetImageFromArray((panel * 255).round().astype(np.uint8)), str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="invesalius-examples .deb, Cranium.inv3, or a folder with either")
    parser.add_argument("--output", type=Path, default=HERE)
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        inv3 = find_or_fetch_inv3(args.source, Path(tmp))
        volume, spacing, digest = read_inv3(inv3, Path(tmp))
    print(f"Cranium: shape {volume.shape}, spacing {spacing} mm, sha256(matrix.dat) {digest}")

    out = args.output / "cranium"
    out.mkdir(parents=True, exist_ok=True)
    datalist: dict = {
        "description": "Cranium (InVesalius, GPL-2): NDCT and simulated quarter-dose LDCT, split by axial slab",
        "source_sha256": digest,
        "dose_fraction": DOSE,
        "seed": SEED,
    }
    preview = None
    for index, (split, (start, stop)) in enumerate(SPLITS.items()):
        ndct = volume[start:stop]
        ldct = simulate_low_dose(ndct.astype(np.float32), DOSE, seed=SEED + index, pixel_spacing=spacing[0])
        ldct = np.clip(np.round(ldct), -1024, 32767).astype(np.int16)
        geometry = VolumeGeometry(spacing=spacing, origin=(0.0, 0.0, start * spacing[2]), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
        for kind, array in (("ndct", ndct), ("ldct", ldct)):
            write_ct(array, geometry, out / f"{kind}_{split}.nii.gz", overwrite=args.overwrite)
        datalist[split] = [{"ndct": f"cranium/ndct_{split}.nii.gz", "ldct": f"cranium/ldct_{split}.nii.gz"}]
        if split == PREVIEW_SLICE[0]:
            preview = (ndct[PREVIEW_SLICE[1]].astype(np.float32), ldct[PREVIEW_SLICE[1]].astype(np.float32))
        noise = (ldct.astype(np.float32) - ndct)[ndct > -100]
        print(f"  {split:10s} z {start}-{stop - 1}: LDCT - NDCT in tissue: mean {noise.mean():+.2f} HU, std {noise.std():.1f} HU")
    datalist_path = args.output / "datalist.json"
    if datalist_path.exists() and not args.overwrite:
        raise SystemExit(f"{datalist_path} exists; pass --overwrite to replace it.")
    datalist_path.write_text(json.dumps(datalist, indent=2) + "\n")
    write_preview(*preview, args.output / "preview.png")
    print(f"Wrote {out}, {datalist_path} and {args.output / 'preview.png'}")


if __name__ == "__main__":
    main()
