"""Fetch the real chest CT of the `pycerr` 2.5.1 wheel into an ignored folder (never committed).

    python training/scripts/fetch_pycerr_chest.py [--out training/data/pycerr]

The wheel ships four normal-dose chest patients (`cerr/datasets/radiomics_phantom_dicom/pat_1..pat_4`,
tumour-centred crops, 3 mm slices, 0.977 mm pixels) and three contrast chest slices
(`cerr/datasets/sample_ct/dosimetric_model_test_data/scan.nii`). Their licence is CC BY-NC 3.0
(non-commercial): a model trained on them may be used for non-commercial purposes only, and says so.
`pip download` fetches the wheel from the package registry; nothing else is downloaded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "pycerr==2.5.1"
MEMBERS = ("cerr/datasets/radiomics_phantom_dicom/", "cerr/datasets/sample_ct/dosimetric_model_test_data/scan.nii")
LICENCE_NOTE = ("Extracted from the pycerr 2.5.1 wheel (https://pypi.org/project/pycerr/). Data licence: CC BY-NC 3.0 "
                "(non-commercial use only). Do not commit these files.\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "pycerr")
    args = parser.parse_args()
    if (args.out / "LICENCE.txt").is_file():
        print(f"already there: {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder, WHEEL], check=True)
        wheel = next(Path(folder).glob("pycerr-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.startswith(MEMBERS) and not n.endswith("/")]
            for name in names:
                target = args.out / Path(name).relative_to("cerr/datasets")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
    (args.out / "LICENCE.txt").write_text(LICENCE_NOTE)
    print(f"{len(names)} files -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
