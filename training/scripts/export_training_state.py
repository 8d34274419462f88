"""A training state's weights as a model file: the last (or averaged) weights of a run, not its validation-best.

    python training/scripts/export_training_state.py STATE.pt --like BEST.pt --out MODEL.pt [--averaged]
        [--metadata KEY=VALUE ...]

The bundle's best-model file (BEST.pt, e.g. ``runs/NAME/ablation_no_kt_crm.pt``) holds the epoch that
validation preferred; the training states in ``runs/NAME/<stage>_state/`` hold the network (and, in a run
with ``weight_averaging``, its average) at the end of an epoch. This writes the state's network, or with
--averaged its averaged copy, as a one-file checkpoint with BEST.pt's network config, HU window, role and
metadata; the metadata's epoch and iterations become the state's, and the validation score (which belongs
to another epoch) is dropped. The state is read with ``weights_only=True``; the output is written
atomically and never replaces an existing file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from check_half_precision import metadata_entry  # noqa: E402


def state_weights(state: dict, averaged: bool) -> dict:
    """The network weights a training state holds: its own, or (`averaged`) its averaged copy's.

    Raises:
        SystemExit: `averaged` is asked of a state without an average.
    """
    if not averaged:
        return state["network"]
    if "averaged_network" not in state:
        raise SystemExit("This training state holds no averaged weights (its run had no weight_averaging); "
                         "leave out --averaged to export its network.")
    prefix = "module."
    return {key[len(prefix):]: value for key, value in state["averaged_network"].items() if key.startswith(prefix)}


def main() -> int:
    from TSCDenoiseLib.core.checkpoint import model_from_checkpoint, read_checkpoint, save_model
    from TSCDenoiseLib.training.bundle import read_training_state

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("state", type=Path, help="a training state (runs/NAME/<stage>_state/*.pt)")
    parser.add_argument("--like", type=Path, required=True, help="the run's best-model file: config, role, metadata")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--averaged", action="store_true", help="export the averaged weights (weight_averaging runs)")
    parser.add_argument("--half-precision", action="store_true", help="store the weights as float16")
    parser.add_argument("--metadata", nargs="+", default=[], metavar="KEY=VALUE", help="entries to add or replace")
    args = parser.parse_args()

    payload = read_checkpoint(args.like)
    state = read_training_state(args.state)
    model = model_from_checkpoint(payload, source=str(args.like))
    model.load_state_dict(state_weights(state, args.averaged))
    trainer = state["trainer"]
    metadata = {key: value for key, value in payload.get("metadata", {}).items()
                if key not in ("best_metric", "best_metric_value")}
    iteration = int(trainer["iteration"])
    epoch = iteration // int(trainer["epoch_length"])  # states are saved at epoch ends
    metadata.update(epoch=epoch, iterations=iteration, exported_from="averaged weights" if args.averaged else "network")
    metadata.update(dict(metadata_entry(item) for item in args.metadata))
    save_model(model, args.out, role=payload["role"], hu_window=payload["hu_window"],
               half_precision=args.half_precision, **metadata)
    print(f"{args.out}: {'averaged weights' if args.averaged else 'network'} of {args.state.name} "
          f"(epoch {epoch}, iteration {iteration})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
