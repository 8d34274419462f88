"""Simulate the wide-distribution training set of the default model into an ignored folder.

    python training/scripts/fetch_pycerr_chest.py           # the real chest CT (CC BY-NC 3.0), once
    python training/scripts/make_training_set.py [--out training/data/wide] [--draws 1] [--workers 2]
    python training/scripts/make_training_set.py --out training/data/texture --draws 3 --phantoms 4 \
        --target-noise --without-pycerr      # clinical grain in the targets; no non-commercial data
    ... [--validation-phantoms 2]            # and torso phantoms for validation only

Sources (normal dose): the bundled Cranium head's training and validation slabs (GPL-2), pycerr's four
chest patients (pat_1-3 training, pat_4 validation; CC BY-NC 3.0) and procedural torso phantoms (ours;
`--validation-phantoms` more, of their own seeds and random streams, for validation only: without pycerr
the validation set is otherwise the held-out slab of the training head, with no body anatomy).
Every chunk of consecutive slices gets its own acquisition drawn from
`TSCDenoiseLib.training.acquisition.AcquisitionDistribution` (dose log-uniform 5-50 %, FBP filter,
pixel spacing 0.4-1.0 mm, and for the chest crops a 30-40 cm body around them), recorded in the
datalist next to the pair. Existing pairs are reused (the file name carries source, chunk and draw).
Never used here: the evaluation cases (pydicom's and dicompyler-core's slices, pycerr's scan.nii and
the sample's test slab).

`--target-noise` gives most targets the noise grain of a clinical normal-dose scan (their own simulated
acquisition at 35-100 % of the simulator's flux, see `simulate_acquisition`): sources smoother than the
scans users denoise would otherwise teach the network to remove that grain as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from TSCDenoiseLib.io import VolumeGeometry, read_ct, write_ct
from TSCDenoiseLib.training.acquisition import AcquisitionDistribution, simulate_acquisition
from TSCDenoiseLib.training.phantom import make_phantom

REPO = Path(__file__).resolve().parents[2]
CRANIUM = REPO / "Resources" / "SampleData" / "cranium"
PYCERR = REPO / "training" / "data" / "pycerr" / "radiomics_phantom_dicom"
SEED = 20261130


TRAINING_PHANTOM_SEED = 100  # phantom i of the training split has seed 100 + i
VALIDATION_PHANTOM_SEED = 200  # and of the validation split 200 + i: no validation phantom repeats one
VALIDATION_PHANTOM_PREFIX = "torso-phantom-val"
PHANTOM_SHAPE = (8, 480, 480)


def sources(with_pycerr: bool = True, phantoms: int = 2, validation_phantoms: int = 0) -> list[dict]:
    """Each source: name, split, whether it is a crop of a body, and how to load it.

    Raises:
        ValueError: a negative count, or so many training phantoms that their seeds reach the validation
            phantoms'.
    """
    if phantoms < 0 or validation_phantoms < 0:
        raise ValueError("phantom counts must be 0 or more")
    if validation_phantoms and TRAINING_PHANTOM_SEED + phantoms > VALIDATION_PHANTOM_SEED:
        raise ValueError(f"at most {VALIDATION_PHANTOM_SEED - TRAINING_PHANTOM_SEED} training phantoms beside "
                         "validation phantoms, or they would repeat the validation phantoms' seeds")
    found = [
        {"name": "cranium-train", "split": "training", "crop": False, "path": CRANIUM / "ndct_training.nii.gz"},
        {"name": "cranium-val", "split": "validation", "crop": False, "path": CRANIUM / "ndct_validation.nii.gz"},
    ]
    for patient, split in (("pat_1", "training"), ("pat_2", "training"), ("pat_3", "training"), ("pat_4", "validation")):
        if with_pycerr and (PYCERR / patient).is_dir():
            found.append({"name": f"chest-{patient}", "split": split, "crop": True, "path": PYCERR / patient})
    for index in range(phantoms):
        found.append({"name": f"torso-phantom-{index}", "split": "training", "crop": False,
                      "phantom_seed": TRAINING_PHANTOM_SEED + index})
    for index in range(validation_phantoms):
        found.append({"name": f"{VALIDATION_PHANTOM_PREFIX}-{index}", "split": "validation", "crop": False,
                      "phantom_seed": VALIDATION_PHANTOM_SEED + index})
    return found


def load(source: dict) -> tuple[np.ndarray, float, float]:
    """(volume HU, pixel spacing mm, slice spacing mm)."""
    if "phantom_seed" in source:
        spacing = (0.8, 0.8, 3.0)
        return make_phantom(PHANTOM_SHAPE, "torso", spacing, seed=source["phantom_seed"]), 0.8, 3.0
    volume, geometry = read_ct(source["path"])
    return volume, float(geometry.spacing[0]), float(geometry.spacing[2])


def simulate_chunk(task: dict) -> dict:
    volume, spacing, slice_spacing = load(task["source"])
    chunk = volume[task["start"]:task["stop"]]
    ndct, ldct = simulate_acquisition(chunk, spacing, task["acquisition"], seed=task["seed"], threads=1)
    geometry = VolumeGeometry(spacing=(task["acquisition"].pixel_spacing_mm,) * 2 + (slice_spacing,))
    out = Path(task["out"])
    write_ct(ndct, geometry, out / f"{task['stem']}_ndct.nii.gz", overwrite=True)
    write_ct(ldct, geometry, out / f"{task['stem']}_ldct.nii.gz", overwrite=True)
    return task["entry"]


def slice_count(source: dict) -> int:
    """Slices of a source volume (a phantom's without making it)."""
    if "phantom_seed" in source:
        return PHANTOM_SHAPE[0]
    return int(load(source)[0].shape[0])


def random_stream(source: dict, source_index: int, draw: int, first_draws: np.random.Generator) -> np.random.Generator:
    """Where a draw's acquisitions and noise seeds come from.

    Draw 0 of the original sources keeps the one stream of the first data set (in source order); each later
    draw has its own, so adding draws changes no existing pair and no two pairs share a noise seed. A
    validation phantom has streams of its own seed, so adding them, or more training phantoms before them,
    moves no pair of any source."""
    if source["split"] == "validation" and "phantom_seed" in source:
        return np.random.default_rng([SEED, source["phantom_seed"], draw])
    return first_draws if draw == 0 else np.random.default_rng([SEED, draw, source_index])


def plan_pairs(chosen: list[dict], draws: int, chunk: int, distribution: AcquisitionDistribution
               ) -> tuple[list[dict], dict]:
    """Every pair of the data set: its simulation task (source, slices, acquisition, noise seed, file stem, datalist
    entry) and the datalist, in a fixed order. The random draws are made for every pair, whether or not its
    files exist already, so the same arguments always plan the same pairs."""
    first_draws = np.random.default_rng(SEED)
    planned, datalist = [], {"description": __doc__.strip().splitlines()[0], "training": [], "validation": []}
    for source_index, source in enumerate(chosen):
        depth = slice_count(source)
        for draw in range(draws):
            rng = random_stream(source, source_index, draw, first_draws)
            for start in range(0, depth, chunk):
                stop = min(start + chunk, depth)
                acquisition = distribution.draw(rng, in_body=source["crop"])
                seed = int(rng.integers(2**31))
                stem = f"{source['split']}/{source['name']}_z{start:03d}-{stop:03d}_d{draw}"
                entry = {"ndct": f"{stem}_ndct.nii.gz", "ldct": f"{stem}_ldct.nii.gz", "source": source["name"],
                         "acquisition": acquisition.as_dict()}
                datalist[source["split"]].append(entry)
                planned.append({"source": source, "start": start, "stop": stop, "acquisition": acquisition,
                                "seed": seed, "stem": stem, "entry": entry})
    return planned, datalist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "training" / "data" / "wide")
    parser.add_argument("--draws", type=int, default=1, help="acquisitions per chunk of slices")
    parser.add_argument("--chunk", type=int, default=5, help="consecutive slices per pair")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phantoms", type=int, default=2, help="procedural torso phantoms (8 slices each)")
    parser.add_argument("--validation-phantoms", type=int, default=0,
                        help="procedural torso phantoms for the validation split (seeds of their own)")
    parser.add_argument("--target-noise", action="store_true",
                        help="give 70 %% of the targets a clinical normal-dose noise grain")
    parser.add_argument("--without-pycerr", action="store_true", help="leave pycerr's CC BY-NC chest CT out")
    args = parser.parse_args()
    if not args.without_pycerr and not PYCERR.is_dir():
        print("note: pycerr's chest CT is missing (run training/scripts/fetch_pycerr_chest.py); head and phantoms only")
    distribution = (AcquisitionDistribution(reference_dose_range=(0.35, 1.0), reference_noise_probability=0.7)
                    if args.target_noise else AcquisitionDistribution())
    try:
        chosen = sources(not args.without_pycerr, args.phantoms, args.validation_phantoms)
    except ValueError as error:
        parser.error(str(error))
    planned, datalist = plan_pairs(chosen, args.draws, args.chunk, distribution)
    tasks = [dict(task, out=str(args.out)) for task in planned if not (args.out / task["entry"]["ldct"]).is_file()]
    for split in ("training", "validation"):
        (args.out / split).mkdir(parents=True, exist_ok=True)
    print(f"{len(tasks)} pairs to simulate, {sum(len(v) for k, v in datalist.items() if k != 'description')} in all")
    with ProcessPoolExecutor(args.workers) as pool:
        for done, entry in enumerate(pool.map(simulate_chunk, tasks), 1):
            print(f"[{done}/{len(tasks)}] {entry['ldct']} {entry['acquisition']}", flush=True)
    (args.out / "datalist.json").write_text(json.dumps(datalist, indent=1) + "\n")
    (args.out / "datalist_quickval.json").write_text(json.dumps(quick_validation(datalist), indent=1) + "\n")
    print(f"datalists: {args.out / 'datalist.json'}, {args.out / 'datalist_quickval.json'}")
    return 0


def quick_validation(datalist: dict) -> dict:
    """The datalist with a validation split small enough for every epoch on a CPU (all of it takes minutes):
    two head pairs, three chest pairs and the first pair of each validation phantom."""
    validation = datalist["validation"]
    phantoms: dict = {}
    for entry in validation:
        if entry["source"].startswith(VALIDATION_PHANTOM_PREFIX):
            phantoms.setdefault(entry["source"], entry)
    quick = ([e for e in validation if e["source"] == "cranium-val"][:2]
             + [e for e in validation if e["source"] == "chest-pat_4"][2:8:2] + list(phantoms.values()))
    return {**datalist, "validation": quick}


if __name__ == "__main__":
    sys.exit(main())
