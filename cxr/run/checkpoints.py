"""torch files in and out: weights-only loading with one clear message, atomic saving.

Every .pth that cxr reads goes through `load_torch_file`: torch.load with
weights_only=True, so a file holding pickled code is refused, never run. A
missing, truncated or foreign file, or one holding Python objects, becomes a
UserError naming the file and what was expected (torch's own message for the
last case advises weights_only=False, which cxr never does). Every .pth cxr
writes is `torch_bytes` written by the run's OutputFolder (temp file, then rename).
"""

import io
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
