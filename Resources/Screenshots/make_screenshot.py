"""Render Resources/Screenshots/TSCDenoise-sample-before-after.png (EXTENSION_SCREENSHOTURLS).

The figure is the module's real result: the bundled low-dose sample's middle slice denoised by the
bundled default model (TSCDenoiseLib.denoise_volume on the CPU, as the worker does), beside the input
and the normal-dose reference, at a soft-tissue window, cropped to the head; the first slice of the
test slab, the one with the most soft tissue. Needs matplotlib (``pip install -e ".[report]"``):

    python Resources/Screenshots/make_screenshot.py
"""

from pathlib import Path

import numpy as np

OUTPUT = Path(__file__).resolve().parent / "TSCDenoise-sample-before-after.png"
WINDOW = (-60.0, 160.0)  # HU: a soft-tissue window, where low-dose noise is most visible


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from TSCDenoiseLib import denoise_volume, load_model
    from TSCDenoiseLib.core.resources import SAMPLE_LOW_DOSE_FILE, SAMPLE_NORMAL_DOSE_FILE, sample_path
    from TSCDenoiseLib.io import read_ct

    low, _ = read_ct(sample_path(SAMPLE_LOW_DOSE_FILE))
    reference, _ = read_ct(sample_path(SAMPLE_NORMAL_DOSE_FILE))
    index = 0
    model = load_model(None, device="cpu")
    denoised = denoise_volume(low[index:index + 1], model, device="cpu", slab_size=1)[0]
    panels = [("Low-dose input", low[index]), ("TSCDenoise (default model)", denoised),
              ("Normal-dose reference", reference[index])]
    head = reference[index] > -500
    rows, columns = np.nonzero(head[head.shape[0] // 4:])
    top, bottom = rows.min() + head.shape[0] // 4 - 8, rows.max() + head.shape[0] // 4 + 8
    left, right = columns.min() - 8, columns.max() + 8
    panels = [(title, image[max(top, 0):bottom, max(left, 0):right]) for title, image in panels]
    figure, axes = plt.subplots(1, 3, figsize=(9.6, 4.2), dpi=100)
    for axis, (title, image) in zip(axes, panels):
        axis.imshow(np.asarray(image, dtype=np.float32), cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
        axis.set_title(title, fontsize=11)
        axis.axis("off")
    figure.suptitle(f"Bundled sample, slice {index}, window [{WINDOW[0]:.0f}, {WINDOW[1]:.0f}] HU", fontsize=10)
    figure.tight_layout()
    figure.savefig(OUTPUT)
    print(OUTPUT, OUTPUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
