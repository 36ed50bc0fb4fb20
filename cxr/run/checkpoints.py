"""torch files in and out: weights-only loading with one clear message, atomic saving.

Every .pth that cxr reads goes through `load_torch_file`: torch.load with
weights_only=True, so a file holding pickled code is refused, never run. A
missing, truncated or foreign file, or one holding Python objects, becomes a
UserError naming the file and what was expected (torch's own message for the
last case advises weights_only=False, which cxr never does). A training
checkpoint is then checked to fit the run before anything is loaded
(`check_resumable`). Every .pth cxr writes is `torch_bytes` written by the
run's OutputFolder (temp file, then rename).
"""

import io
import math
import pickle
import zipfile

import torch

from cxr.run.errors import UserError


def load_torch_file(path, what):
    """The tensors and plain values saved in `path`; `what` says in errors what
    was expected ("a cxr training checkpoint", "ResNet weights", ...)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} not found; expected {what}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; expected {what}") from None
    except pickle.UnpicklingError:
        if zipfile.is_zipfile(path):  # the format torch.save writes
            raise UserError(
                f"{path} is not {what}: it holds Python objects besides tensors and plain values, "
                "and cxr loads only those (anything else could run code)"
            ) from None
        raise UserError(
            f"cannot read {path}: it is not a PyTorch file of tensors, or an old-format one "
            f"holding Python objects, which cxr never loads; expected {what}"
        ) from None
    except Exception as error:  # torch.load fails in many ways on foreign bytes
        raise UserError(
            f"cannot read {path}: it is not a PyTorch file of tensors ({type(error).__name__}: "
            f"{error}); expected {what}"
        ) from None


def check_finite(state, what):
    """Refuse weights holding NaN or infinity: nothing trained, loaded or scored from
    them would mean anything."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(
            f"{what} holds non-finite weights (NaN or infinity in {', '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}); they cannot be used"
        )


def torch_bytes(state):
    """`state` (tensors and plain values) as torch.save writes it, in memory: the
    archive's inner folder has torch's fixed name, so the same state gives the same
    bytes whatever file it is written to (`cxr.run.outputs.OutputFolder.write_bytes`,
    which writes atomically and turns a full disk into one line)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


CHECKPOINT_KEYS = ("model", "optimizer", "scaler", "epoch", "step")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _same_kind(theirs, mine):
    """A saved optimizer setting that can stand where this optimizer's own stands."""
    if _number(mine):
        return _number(theirs)
    return type(theirs) is type(mine)


def _same_group(theirs, mine):
    """A saved parameter group that can stand for this optimizer's group `mine`."""
    return (
        isinstance(theirs, dict)
        and isinstance(theirs.get("params"), list)
        and len(theirs["params"]) == len(mine["params"])
        and all(map(_count, theirs["params"]))
        and all(_same_kind(theirs[k], v) for k, v in mine.items() if k in theirs and k != "params")
    )


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _sample(keys):
    return ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")


def check_resumable(state, *, model, optimizer, scaler, source):
    """Refuse a training checkpoint that does not fit this run, before anything is
    loaded: the model's tensors, each of its shape and finite; the optimizer's groups,
    and per-parameter state of each parameter's shape; the scaler's numbers; whole
    epoch and step counts. One UserError naming `source` and what differs."""
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise UserError(f"{source}: a cxr training checkpoint holds {', '.join(missing)}")
    for key in ("epoch", "step"):
        if not _count(state[key]):
            raise UserError(f"{source}: its {key} {state[key]!r} is not a whole number from 0")
    _check_weights(state["model"], model.state_dict(), source)
    _check_optimizer(state["optimizer"], optimizer, source)
    saved = state["scaler"]
    if (
        not isinstance(saved, dict)
        or set(saved) != set(scaler.state_dict())
        or not all(_number(v) and v >= 0 for v in saved.values())
    ):
        raise UserError(
            f"{source}: its scaler state is not the numbers this run's GradScaler saves"
        )


def state_mismatch(state, expected):
    """(missing, unexpected, of the wrong shape): the sorted keys where a state dict of
    tensors differs from `expected` (a model's state dict)."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    return missing, unexpected, misshaped


def _check_weights(weights, expected, source):
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise UserError(f"{source}: its model weights are not a state dict of tensors")
    missing, unexpected, misshaped = state_mismatch(weights, expected)
    if missing or unexpected or misshaped:
        parts = {"missing": missing, "unexpected": unexpected, "of the wrong shape": misshaped}
        differ = ", ".join(f"{len(k)} {p} ({_sample(k)})" for p, k in parts.items() if k)
        raise UserError(f"{source} does not hold this run's model: tensors {differ}")
    check_finite(weights, str(source))


def _check_optimizer(saved, optimizer, source):
    groups = optimizer.param_groups
    if (
        not isinstance(saved, dict)
        or not isinstance(saved.get("state"), dict)
        or not isinstance(saved.get("param_groups"), list)
        or len(saved["param_groups"]) != len(groups)
        or not all(map(_same_group, saved["param_groups"], groups))
    ):
        raise UserError(f"{source}: its optimizer state is not that of this run's optimizer")
    shapes = {
        index: parameter.shape
        for theirs, mine in zip(saved["param_groups"], groups)
        for index, parameter in zip(theirs["params"], mine["params"])
    }
    if len(shapes) != sum(len(group["params"]) for group in groups):
        raise UserError(f"{source}: its optimizer numbers two parameters alike")
    for index, entry in saved["state"].items():
        if index not in shapes or not isinstance(entry, dict):
            raise UserError(f"{source}: its optimizer holds state of an unknown parameter")
        for name, value in entry.items():
            if not isinstance(value, torch.Tensor):  # SGD and LARS keep momentum buffers
                raise UserError(f"{source}: its optimizer's {name} is not a tensor")
            if value.shape != shapes[index]:
                raise UserError(
                    f"{source}: its optimizer's {name} of parameter {index} has shape "
                    f"{tuple(value.shape)}, the parameter {tuple(shapes[index])}"
                )
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise UserError(f"{source}: its optimizer's {name} holds NaN or infinity")
