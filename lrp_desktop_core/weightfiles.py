"""Reading model files safely: safetensors, state dicts, and (only when trusted) pickled modules.

Weights are data: safetensors files and state dicts saved with ``torch.save`` are read without
running any code from the file (``torch.load(..., weights_only=True)``). A file that holds a whole
pickled module or a TorchScript archive can only be loaded by running code it names, so it is
refused unless the caller says it trusts the file; the refusal lists what the file would import,
found by scanning the pickle opcodes without unpickling anything. Weights holding NaN or inf are
refused too, naming the first tensor that does, since they would make every explanation NaN.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import lzma
import pickle
import pickletools
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

# Keys under which checkpoints commonly nest the state dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
# Prefixes that wrappers add to every key (DataParallel, torch.compile).
_KEY_PREFIXES = ("module.", "_orig_mod.")
_SHOWN_NAMES = 12  # how many keys an error message lists before "and N more"
_SHOWN_IMPORTS = 40  # imports matter for a trust decision, so more of them are listed
_STANDARD_MODULES = ("torch.", "collections.", "builtins.", "__builtin__.", "_codecs.")
# What zipfile raises for a damaged archive: bad structure, checksum or compressed data, truncation,
# an unknown compression method (NotImplementedError) or encryption (RuntimeError).
_ZIP_DAMAGE = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)


class ModelLoadError(Exception):
    """A model or its weights could not be loaded; the message says why and what to do."""


@dataclass
class WeightsFile:
    """What a model file held: a state dict, or (trusted files only) a whole module.

    Attributes
    ----------
    path : Path
        The file.
    sha256 : str
        SHA-256 of the file's bytes.
    state_dict : dict of str to Tensor
        The weights, unwrapped and without wrapper prefixes (empty when ``module`` is set).
    module : nn.Module or None
        The module of a trusted full-model or TorchScript file.
    metadata : dict of str to str
        The safetensors metadata (empty for other formats).
    """

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    module: nn.Module | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _listing(names: list[str], limit: int = _SHOWN_NAMES) -> str:
    """Return the first ``limit`` names comma-separated, with how many more there are."""
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def file_sha256(path: Path) -> str:
    """Return the SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_safetensors(path: Path, head: bytes) -> bool:
    """Tell whether a file is safetensors by name or by its header (length, then a JSON object)."""
    if path.suffix.lower() == ".safetensors":
        return True
    if len(head) < 9:
        return False
    header_length = struct.unpack("<Q", head[:8])[0]
    return head[8:9] == b"{" and 0 < header_length < path.stat().st_size


def _pickle_globals(stream: io.BytesIO) -> Iterator[str]:
    """Yield the ``module.name`` of every global one pickle in ``stream`` refers to."""
    strings: list[str] = []
    memo: dict[int, str | None] = {}
    last_string: str | None = None
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            yield str(arg).replace(" ", ".")
        elif name == "STACK_GLOBAL" and len(strings) >= 2:
            yield f"{strings[-2]}.{strings[-1]}"
        pushed = None
        if isinstance(arg, str) and ("UNICODE" in name or "STRING" in name):
            pushed = arg
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed = memo.get(int(arg))
        elif name == "MEMOIZE":
            memo[len(memo)] = last_string
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = last_string
        if pushed is not None:
            strings.append(pushed)
        if name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            last_string = pushed


def pickle_imports(data: bytes) -> list[str]:
    """Return what the pickles in ``data`` would import, sorted, without unpickling anything.

    Parameters
    ----------
    data : bytes
        One or more pickles back to back (the legacy ``torch.save`` format holds several),
        possibly followed by raw tensor bytes, which end the scan.
    """
    stream, found = io.BytesIO(data), set()
    while stream.tell() < len(data):
        try:
            found.update(_pickle_globals(stream))
        except (ValueError, EOFError, struct.error, UnicodeDecodeError, IndexError, KeyError):
            break
    return sorted(found)


def archive_imports(path: Path) -> list[str]:
    """Return what the pickles inside a ``torch.save`` or TorchScript zip archive would import.

    A damaged archive ends the scan at the first member that cannot be read, as data that is no
    pickle ends :func:`pickle_imports`.
    """
    found: set[str] = set()
    with contextlib.suppress(*_ZIP_DAMAGE), zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if member.endswith(".pkl"):
                found.update(pickle_imports(archive.read(member)))
    return sorted(found)


def _is_torchscript(path: Path) -> bool:
    """Tell whether a zip archive is TorchScript (it carries code or a constants pickle)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except _ZIP_DAMAGE:  # torch.load reports the damage
        return False
    return any("/code/" in f"/{member}" or member.endswith("constants.pkl") for member in names)


def _untrusted_error(path: Path, kind: str, imports: list[str]) -> ModelLoadError:
    """Return the refusal for a file that can only be loaded by running its code.

    The imports from outside torch and the standard library come first: they are the code a
    user most needs to know about.
    """
    ordered = sorted(imports, key=lambda name: (name.startswith(_STANDARD_MODULES), name))
    listed = _listing(ordered, _SHOWN_IMPORTS) or "nothing"
    return ModelLoadError(
        f"{path} is {kind}: loading it runs code and imports {listed}. "
        "Pass trust=True only if the file comes from a source you trust. Safer: save just the "
        "weights (safetensors, or torch.save(model.state_dict(), ...)) and load them with "
        "load_model('<architecture name>', weights=...)."
    )


def _damaged_error(path: Path, error: Exception) -> ModelLoadError:
    """Return the error for a file that looks like a PyTorch file but cannot be decoded."""
    return ModelLoadError(
        f"{path} looks like a PyTorch file but cannot be read ({error}). It may be damaged or "
        "incomplete; save or download it again."
    )


def _load_pickled(path: Path, trust: bool, is_zip: bool) -> object:
    """Load a ``torch.save`` file: as plain data, or as arbitrary objects when trusted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        imports = archive_imports(path) if is_zip else pickle_imports(path.read_bytes())
        if not imports:  # refused objects always name a class, so this is damage
            raise _damaged_error(path, error) from error
        if not trust:
            raise _untrusted_error(
                path, "a pickled Python object, not just weights", imports
            ) from error
    except Exception as error:  # torch raises many types for damaged archives
        raise _damaged_error(path, error) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # the file's own code runs here; report whatever it raises
        raise ModelLoadError(
            f"{path} could not be unpickled ({type(error).__name__}: {error}). A pickled model "
            "needs the code of its classes importable here; saving its state dict avoids that."
        ) from error


def _load_torchscript(path: Path, trust: bool) -> nn.Module:
    """Load a TorchScript archive, which is only allowed for trusted files."""
    if not trust:
        raise _untrusted_error(path, "a TorchScript archive", archive_imports(path))
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # TorchScript reports damage with RuntimeError and others
        raise ModelLoadError(f"{path} is a damaged TorchScript archive ({error}).") from error


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix (``module.``, ``_orig_mod.``) that every key carries."""
    state = dict(state)
    for prefix in _KEY_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _unwrap(path: Path, content: object) -> tuple[dict[str, torch.Tensor], nn.Module | None]:
    """Return the state dict or module inside a loaded object, looking into common wrappers."""
    while isinstance(content, Mapping) and not all(
        isinstance(value, torch.Tensor) for value in content.values()
    ):
        key = next((key for key in _WRAPPER_KEYS if key in content), None)
        if key is None:
            keys = _listing([str(key) for key in content])
            raise ModelLoadError(
                f"{path} holds a dictionary that is not a state dict (its keys: {keys}) and has "
                f"none of the keys {', '.join(_WRAPPER_KEYS)} that usually hold one."
            )
        content = content[key]
    if isinstance(content, nn.Module):
        return {}, content
    if isinstance(content, Mapping) and content and all(isinstance(key, str) for key in content):
        return _strip_prefixes(content), None
    raise ModelLoadError(
        f"{path} holds {type(content).__name__ if content is not None else 'nothing'}, not model "
        "weights. Expected a state dict (name -> tensor) or a model."
    )


def _check_finite(content: WeightsFile) -> None:
    """Raise :class:`ModelLoadError` naming the first floating tensor that holds NaN or inf.

    One pass of ``isfinite`` per tensor; the values are counted only once one is found.
    """
    tensors: Iterable[tuple[str, torch.Tensor]] = content.state_dict.items()
    if content.module is not None:
        tensors = itertools.chain(content.module.named_parameters(), content.module.named_buffers())
    for name, tensor in tensors:
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
        raise ModelLoadError(
            f"{content.path}: {name} holds {nan + inf} non-finite values ({nan} NaN, {inf} inf) "
            f"among its {tensor.numel()}, which would make predictions and explanations NaN. The "
            "weights were probably saved after training diverged, or the file is damaged: use an "
            "earlier checkpoint or another copy of the file."
        )


def read_weights(path: Path, trust: bool = False) -> WeightsFile:
    """Read a model file: safetensors, a ``torch.save`` state dict, a full module or TorchScript.

    Parameters
    ----------
    path : Path
        The file.
    trust : bool
        Allow files that run code when loaded (full pickled modules, TorchScript).

    Raises
    ------
    ModelLoadError
        For a missing, empty, damaged or unknown file, a code-carrying file without ``trust``, or
        weights holding NaN or inf (naming the first such tensor).
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"The weights file {path} does not exist. Check the path.")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; choose the weights file inside it.")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"The weights file {path} is empty (0 bytes); save it again.")
    content = _read(path, trust)
    _check_finite(content)
    return content


def _read(path: Path, trust: bool) -> WeightsFile:
    """Read the contents of an existing, non-empty model file (see :func:`read_weights`)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    sha256 = file_sha256(path)
    if _is_safetensors(path, head):
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            tensors = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as error:
            raise ModelLoadError(
                f"{path} is not a valid safetensors file ({error}); it may be damaged or "
                "incomplete."
            ) from error
        return WeightsFile(path, sha256, state_dict=_strip_prefixes(tensors), metadata=metadata)
    is_zip = zipfile.is_zipfile(path)
    if head.startswith(b"PK\x03\x04") and not is_zip:
        raise ModelLoadError(
            f"{path} is a damaged or incomplete archive (it starts like a PyTorch file but has no "
            "table of contents). Save or download it again."
        )
    if is_zip and _is_torchscript(path):
        return WeightsFile(path, sha256, module=_load_torchscript(path, trust))
    if not is_zip and not head.startswith(b"\x80"):
        raise ModelLoadError(
            f"{path} is not a model file this program knows. Use a .safetensors file or a "
            ".pt/.pth file written by torch.save."
        )
    state, module = _unwrap(path, _load_pickled(path, trust, is_zip))
    return WeightsFile(path, sha256, state_dict=state, module=module)


def apply_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, architecture: str
) -> None:
    """Copy ``state`` into ``model``, refusing weights that do not fit it.

    Raises
    ------
    ModelLoadError
        Naming missing and unexpected keys and shape mismatches.
    """
    expected = model.state_dict()
    problems = []
    wrong_shape = [
        f"{key} (file {tuple(value.shape)}, model {tuple(expected[key].shape)})"
        for key, value in state.items()
        if key in expected and tuple(value.shape) != tuple(expected[key].shape)
    ]
    if wrong_shape:
        problems.append(f"shapes differ for {_listing(wrong_shape)}")
    else:
        loadable = OrderedDict(state)
        # a file read here keeps no module versions (MNASNet refuses a state dict without them):
        # its weights are in the format of the code that saved them, taken to be the current one
        loadable._metadata = expected._metadata  # type: ignore[attr-defined]
        result = model.load_state_dict(loadable, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing:
            problems.append(f"missing from the file: {_listing(missing)}")
        if result.unexpected_keys:
            problems.append(f"unexpected in the file: {_listing(result.unexpected_keys)}")
    if problems:
        raise ModelLoadError(
            f"The weights in {path} do not fit the {architecture} architecture; "
            + "; ".join(problems)
            + f". Check that the file was saved from a {architecture} model with the same number "
            "of classes, or choose the matching architecture."
        )
