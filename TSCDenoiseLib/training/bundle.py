"""Entry checks of the training bundle (``training/configs/train.json``): everything a run needs is
checked before anything is built or written, and a failure is one line naming the file and the key.

``python -m monai.bundle run`` wraps an error raised inside a config expression in pages of MONAI
traceback; :func:`one_line_errors` (the config's first step) prints our own errors as one line instead.
"""

from __future__ import annotations

import copy
import hashlib
import sys
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..errors import InvalidInputError, TSCDenoiseError
from .data import read_datalist
from .transforms import PAIR_KEYS

STATE_KEYS = ("network", "optimizer", "lr_scheduler", "trainer")
STAGES = ("both", "teacher", "student")


def user_error(error: BaseException) -> Optional[TSCDenoiseError]:
    """The :class:`TSCDenoiseError` behind `error` (MONAI wraps it in "Failed to evaluate" errors), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, TSCDenoiseError):
            return error
        seen.add(id(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


def _excepthook(kind, error, traceback) -> None:
    found = user_error(error)
    if found is None:
        sys.__excepthook__(kind, error, traceback)  # a bug, not bad input: the traceback helps
        return
    print(f"error: {found}", file=sys.stderr)


def one_line_errors() -> None:
    """Make an uncaught TSCDenoise error end the process with one line on stderr (exit status 1)."""
    sys.excepthook = _excepthook


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunRecord:
    """What a stage trains: its name and, for a student, the teacher it trains against (path and content hash).

    Kept in the stage's training state (in ``CheckpointSaver``'s ``save_dict``) and, for the teacher, in the
    student's deployable checkpoint, so that a resumed run can refuse to continue against another teacher.
    """

    def __init__(self, stage: str, teacher: Optional[str | Path] = None) -> None:
        self.stage = stage
        self.teacher = str(Path(teacher).resolve()) if teacher else ""
        self._sha256: Optional[str] = None

    @property
    def teacher_sha256(self) -> str:
        """Hashed on first use: in a two-stage run the teacher file is written after this record is made."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.teacher) if self.teacher else ""
        return self._sha256

    def state_dict(self) -> dict:
        return {"stage": self.stage, "teacher": self.teacher, "teacher_sha256": self.teacher_sha256}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: :func:`check_resume` compares the recorded run before the run starts."""

    def metadata(self) -> dict:
        """Checkpoint metadata entries naming the teacher (none when the stage trains without one)."""
        if not self.teacher:
            return {}
        return {"teacher": Path(self.teacher).name, "teacher_sha256": self.teacher_sha256}


def read_training_datalist(path: str | Path, simulate_low_dose: bool = False) -> dict:
    """The datalist's splits, refusing one a training run cannot use (no training or validation entries).

    Raises:
        InvalidInputError: naming the datalist file, the split/entry and the bundle key `datalist`.
    """
    try:
        splits = read_datalist(path, require_ldct=not simulate_low_dose)
        for split in ("training", "validation"):
            if not splits.get(split):
                raise InvalidInputError(
                    f'Datalist {path} has no "{split}" entries; a training run needs at least one in "training" and '
                    'one in "validation".'
                )
    except InvalidInputError as error:
        raise InvalidInputError(f"{error} (bundle key 'datalist')") from None
    # Other fields describe a pair (its source, its simulated acquisition); they are not inputs, and entries
    # with different ones could not be batched together.
    return {split: [{k: v for k, v in entry.items() if k in PAIR_KEYS} for entry in entries]
            for split, entries in splits.items()}


def read_training_state(path: str | Path) -> dict:
    """A ``CheckpointSaver`` file of this bundle, loaded safely, or one clear error.

    Raises:
        InvalidInputError: the file is missing, unreadable, or not a training state of this bundle.
    """
    path = Path(path)
    hint = "Pass a file from <output_dir>/<stage>_state/ (--resume), or leave --resume out to start afresh."
    if not path.is_file():
        raise InvalidInputError(f"Training state {path} does not exist (bundle key 'resume'). {hint}")
    if not zipfile.is_zipfile(path):
        raise InvalidInputError(f"Training state {path} is not a PyTorch file (bundle key 'resume'). {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to read the file is the same user error
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InvalidInputError(
            f"Training state {path} cannot be read ({first}) (bundle key 'resume'). {hint}"
        ) from None
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise InvalidInputError(
            f"{path} is not a training state of this bundle: it lacks {', '.join(missing)} (bundle key 'resume'; "
            f"a model checkpoint such as model.pt holds weights only). {hint}"
        )
    return state


def check_resume(path: str | Path, run: RunRecord, averaged: bool = False) -> None:
    """Refuse a resume file of another stage, or one whose student trained against another teacher.

    Args:
        path: the training state to resume from (bundle key `resume`).
        run: the stage this run resumes, with the teacher its config names.
        averaged: whether this run averages its weights; the state must then hold the average.

    Raises:
        InvalidInputError: naming the file, what it holds and the keys to change.
    """
    state = read_training_state(path)
    if averaged and "averaged_network" not in state:
        raise InvalidInputError(
            f"Training state {path} was saved by a run without weight averaging, so it cannot resume one with it "
            "(bundle key 'weight_averaging'). Resume it with --weight_averaging None, or start a new averaged run "
            "from its weights (--student_init with a model file)."
        )
    recorded = state.get("run")
    if not isinstance(recorded, dict):
        return  # written before the bundle recorded its run: nothing to compare
    if recorded.get("stage") and recorded["stage"] != run.stage:
        raise InvalidInputError(
            f"Training state {path} is from the {recorded['stage']} stage, but this run resumes the {run.stage} "
            f"stage (bundle keys 'resume' and 'stage'). Pass --stage {recorded['stage']} or a {run.stage} state."
        )
    teacher_sha256 = recorded.get("teacher_sha256", "")
    if teacher_sha256 and teacher_sha256 != run.teacher_sha256:
        raise InvalidInputError(
            f"Training state {path} trained its student against teacher {recorded.get('teacher')} "
            f"(sha256 {teacher_sha256[:12]}), but this run's teacher is {run.teacher or 'none'}"
            f"{' (sha256 ' + run.teacher_sha256[:12] + ')' if run.teacher else ''}; a resumed student keeps its "
            f"teacher (bundle key 'teacher_checkpoint'). Pass --teacher_checkpoint {recorded.get('teacher')}."
        )


def check_stage(stage: str) -> str:
    """`stage` if it is one of both / teacher / student."""
    if stage not in STAGES:
        raise InvalidInputError(f"stage must be one of {', '.join(STAGES)}, got {stage!r} (bundle key 'stage').")
    return stage


def check_checkpoint(path: Optional[str | Path], key: str) -> None:
    """A checkpoint the run will read later (teacher, warm start) is checked now, before anything is written."""
    if not path:
        return
    from ..core.checkpoint import read_checkpoint
    from ..errors import CheckpointError

    try:
        read_checkpoint(path)
    except CheckpointError as error:
        raise CheckpointError(f"{error} (bundle key '{key}')") from None


def check_run(
    resume: Optional[str] = None,
    resumed: Optional[RunRecord] = None,
    checkpoints: Sequence[tuple] = (),
    datasets: Sequence[Any] = (),
    averaged: bool = False,
) -> None:
    """The config's entry check (`initialize`): every input of the run, before any folder is made.

    Args:
        resume: the training state to resume from, if any.
        resumed: the run record of the stage that `resume` continues.
        checkpoints: (path or None, bundle key) of the checkpoints the run reads (teacher, warm start).
        datasets: passed only so that they are built (loaded and checked) at this point.
        averaged: whether this run averages its weights (bundle key `weight_averaging`): a resumed state
            must then hold the average too.

    Raises:
        TSCDenoiseError: the first problem found, naming the file and the bundle key.
    """
    for path, key in checkpoints:
        check_checkpoint(path, key)
    if resume is not None:
        check_resume(resume, resumed, averaged)


def _running_parser():
    """The ``ConfigParser`` evaluating the calling config expression.

    MONAI hands a config expression no handle on its parser, so it is found on the call stack
    (``ConfigParser.get_parsed_content`` is always there while an expression is evaluated).
    """
    from monai.bundle import ConfigParser

    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ConfigParser):
            return candidate
        frame = frame.f_back
    raise RuntimeError("run_stages must be called from a bundle config run by monai.bundle (python -m monai.bundle run).")


def _run_items(parser, item_id: str) -> None:
    """Evaluate a config expression, or each one of a list in order (as ``monai.bundle`` runs ``initialize``)."""
    if item_id not in parser:
        return
    if isinstance(parser[item_id], list):
        for index in range(len(parser[item_id])):
            parser.get_parsed_content(f"{item_id}#{index}")
    else:
        parser.get_parsed_content(item_id)


def run_stages(stage: str, teacher_checkpoint: Optional[str], resume: Optional[str] = None) -> None:
    """Train the stage(s) `stage` names ("both": the teacher, then the student against it), each in a fresh
    parse of the running config with its ``stage`` key set, by running that parse's ``initialize`` and
    ``train_stage``.

    The config holds one generic stage whose names and paths come from ``stage``; MONAI's ``%`` macro
    cannot make a second copy of it (``@`` references inside a copied block are not re-bound), so each
    stage gets its own parser, as a single-stage run (``--config_file "['configs/train.json',
    'configs/student.json']"``) would.

    Args:
        stage: "both", "teacher" or "student".
        teacher_checkpoint: the teacher file of this run, resolved once: the student of a two-stage run trains
            against the teacher the first stage wrote.
        resume: a training state for the first stage run (the teacher's in a two-stage run), or None.

    Raises:
        TSCDenoiseError: a check of a stage failed (one line on the command line).
    """
    from monai.bundle import ConfigParser

    config = _running_parser().get()
    stages = ("teacher", "student") if check_stage(stage) == "both" else (stage,)
    for index, name in enumerate(stages):
        parser = ConfigParser(copy.deepcopy(config))
        parser["stage"] = name
        parser["teacher_checkpoint"] = str(teacher_checkpoint) if teacher_checkpoint else None
        parser["resume"] = resume if index == 0 else None
        parser.parse()
        _run_items(parser, "initialize")
        _run_items(parser, "train_stage")


def init_distributed(device: torch.device) -> None:
    """Join the process group when started by ``torchrun`` with more than one process (nccl on GPUs, gloo on
    CPU); nothing otherwise. Idempotent."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)


def finish_distributed() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
