"""Model registry and loading: torchvision classifiers by name, weight files, the bundled demos.

A :class:`ModelSpec` carries everything a caller needs besides the weights: how to build the
network, how to preprocess an image for it and its class names. Which LRP set-up suits a model is
decided from its structure by :func:`~.recommend.recommend`, never from its name.
:func:`load_model` turns a spec (by name) and weights into a ready model.

Accepted forms of :func:`load_model`
------------------------------------
``load_model("demo")``, ``load_model("demo_vit")``
    A bundled demo classifier (a CNN, a Vision Transformer; see :mod:`.demos`) with its bundled
    weights (works offline).
``load_model("resnet18", pretrained=True, progress=callback)``
    A torchvision classifier with its ImageNet weights, taken from the torch hub cache when they
    are there and downloaded into it otherwise. Without ``pretrained`` the weights are random:
    drawn from ``seed`` (``load_model("resnet18", seed=0)``) or from a fresh seed that is kept, so
    :attr:`LoadedModel.weights` can always say how to draw them again.
``load_model("resnet18", weights="resnet18.safetensors")``
    A registry architecture with weights from a file: ``.safetensors`` (preferred) or a
    ``.pt``/``.pth`` state dict, also wrapped as ``{"state_dict": ...}`` or ``{"model": ...}`` or
    with a ``module.`` prefix.
``load_model("weights.safetensors")``
    A safetensors file whose metadata names its registry architecture (as the demos' do).
``load_model("resnet18", weights="full.pt", trust=True)`` or ``load_model("full.pt", trust=True)``
    A fully pickled module or a TorchScript archive. Loading one runs code from the file, so it is
    refused unless ``trust=True``; the refusal lists what the file would import. Without a name
    the model gets ImageNet preprocessing and, for 1000 outputs, the ImageNet class names.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import http.client
import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError
from urllib.parse import urlparse
from urllib.request import urlopen

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from torch import nn

from . import names
from .demo_net import DEMO_SAMPLES_DIR
from .demos import DEMOS, BundledDemo
from .explain import model_dtype
from .image_fit import center_crop, normalised_tensor, resize_shorter_side
from .images import image_files, mask_file
from .uninitialised import initialisers_skipped
from .weightfiles import ModelLoadError, WeightsFile, apply_state_dict, read_weights

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "WeightsSource",
    "demo_mask",
    "demo_samples",
    "download_weights",
    "get_spec",
    "is_registered",
    "list_models",
    "load_model",
    "pretrained_cache_path",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = names.DEFAULT_MODEL
"""The model the application starts with: the bundled demo, so everything works offline."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# Builder arguments that give the architecture exactly as torchvision's pretrained builder leaves
# it (these two switch on the input transform and drop or keep auxiliary heads when pretrained).
_BUILDER_KWARGS: dict[str, dict[str, bool]] = {
    "googlenet": {"aux_logits": False, "transform_input": True, "init_weights": False},
    "inception_v3": {"aux_logits": True, "transform_input": True, "init_weights": False},
}

# Old DenseNet checkpoints name layers "norm.1"; the modules are now called "norm1".
_DENSENET_OLD_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")
_DOWNLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    """What to know about a model besides its weights.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"demo"``, ``"demo_vit"`` or ``"resnet18"``.
    title : str
        Human-readable name for menus.
    builder : callable
        Returns a fresh, randomly initialised network of this architecture.
    input_size : tuple of int
        (height, width) of the network input.
    resize : int
        The shorter image side is resized to this many pixels ...
    crop : int
        ... and then the centre ``crop`` x ``crop`` pixels are cut out.
    mean, std : tuple of float
        Per-channel normalisation of the 0..1 RGB input.
    class_names : tuple of str
        Name of each output logit.
    interpolation : str
        Resampling used for the resize (``"bilinear"`` or ``"bicubic"``).
    weights_url : str or None
        Where the pretrained weights are downloaded from (torchvision models).
    default_weights : Path or None
        Weights file that is always loaded when no other is given (a bundled demo's).
    weights_name : str or None
        Name of the published weights at ``weights_url`` (e.g. ``"IMAGENET1K_V1"``).
    """

    name: str
    title: str
    builder: Callable[[], nn.Module] = field(repr=False, compare=False)
    input_size: tuple[int, int]
    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = field(repr=False)
    interpolation: str = "bilinear"
    weights_url: str | None = None
    default_weights: Path | None = None
    weights_name: str | None = None

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.class_names)

    def fit(self, image: Image.Image) -> Image.Image:
        """Resize (shorter side to :attr:`resize`) and centre-crop an RGB image to the input size.

        The display image and the network input both come from this, so they line up pixel for
        pixel with a heatmap.
        """
        return center_crop(resize_shorter_side(image, self.resize, self.interpolation), self.crop)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Return the normalised network input, shape (3, H, W) float32, of a PIL image."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        return normalised_tensor(self.fit(image), self.mean, self.std)

    def input_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the lowest and highest normalised input values, each of shape (1, 3, 1, 1).

        They are ``(0 - mean) / std`` and ``(1 - mean) / std`` per channel: the ZBox rule's box.
        """
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (0.0 - mean) / std, (1.0 - mean) / std


class WeightsSource:
    """Where a model's weights came from, and its title naming them.

    A base of classes with ``spec``, ``weights_path``, ``weights_sha256``, ``pretrained`` and
    ``seed`` attributes: a loaded model, and what the app knows of one.
    """

    spec: ModelSpec
    weights_path: Path | None
    weights_sha256: str | None
    pretrained: str | None
    seed: int | None

    @property
    def weights(self) -> dict[str, object]:
        """Where the weights came from, as :func:`weights_record` gives it."""
        return weights_record(self.weights_path, self.weights_sha256, self.pretrained, self.seed)

    @property
    def title(self) -> str:
        """The title and the weights: ``"resnet18 (torchvision), random weights (seed 0)"``."""
        return f"{self.spec.title}, {weights_label(self.weights)}"


@dataclass
class LoadedModel(WeightsSource):
    """A model ready for attribution.

    Attributes
    ----------
    spec : ModelSpec
        Its preprocessing and class names.
    model : nn.Module
        The network, in eval mode, on the CPU.
    weights_path : Path or None
        The file its weights came from (None for random weights).
    weights_sha256 : str or None
        SHA-256 of that file, for reports.
    pretrained : str or None
        Name of the published weights loaded (e.g. ``"IMAGENET1K_V1"``).
    seed : int or None
        The seed random weights were drawn from (None for weights that are not random).
    """

    spec: ModelSpec
    model: nn.Module
    weights_path: Path | None
    weights_sha256: str | None
    pretrained: str | None = None
    seed: int | None = None


def weights_record(
    path: Path | None, sha256: str | None, pretrained: str | None = None, seed: int | None = None
) -> dict[str, object]:
    """Say where weights came from, for records and captions.

    Parameters
    ----------
    path, sha256 : optional
        The file the weights were read from and its SHA-256 hash.
    pretrained : str, optional
        The name of published weights (their file is ``path``, in the torch hub cache).
    seed : int, optional
        The seed of random weights.

    Returns
    -------
    dict
        Keys ``file`` (str or None), ``sha256``, ``pretrained`` (name or None), ``random`` (True
        when no file gave the weights) and ``seed``.
    """
    return {
        "file": None if path is None else str(path),
        "sha256": sha256,
        "pretrained": pretrained,
        "random": path is None,
        "seed": seed,
    }


def weights_label(record: dict[str, object]) -> str:
    """Name weights as they are, from a :func:`weights_record`.

    For example ``"IMAGENET1K_V1 weights"``, ``"weights net.pt (sha256 1a2b3c4d)"`` or
    ``"random weights (seed 7)"``.
    """
    if record.get("random"):
        seed = record.get("seed")
        return "random weights" + ("" if seed is None else f" (seed {seed})")
    if record.get("pretrained"):
        return f"{record['pretrained']} weights"
    digest = str(record.get("sha256") or "")[:8]
    name = Path(str(record.get("file"))).name
    return f"weights {name}" + (f" (sha256 {digest})" if digest else "")


def _torchvision_names() -> list[str]:
    """Return the names of torchvision's image classifiers."""
    import torchvision  # here: importing it takes as long as torch, and a demo needs none of it

    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_models() -> list[str]:
    """Return every registry name: the bundled demos first, then torchvision's image classifiers."""
    return [*DEMOS, *_torchvision_names()]


def is_registered(name: str) -> bool:
    """Whether ``name`` is in :func:`list_models`; a demo's name is known without torchvision."""
    return name in DEMOS or name in _torchvision_names()


def _builder_kwargs(name: str, weights: WeightsEnum) -> dict[str, object]:
    """Return the builder arguments that give the architecture ``weights`` were trained for.

    Besides :data:`_BUILDER_KWARGS`, this is the input size that vision transformers build their
    position embedding (ViT) or attention grid (MaxViT) for, which torchvision's pretrained
    builders take from the weights' metadata (ViT-H/14's default weights expect 518 x 518 pixels,
    its plain builder 224 x 224). Random weights get the same architecture, so the preprocessing
    of the spec fits every model it builds.
    """
    kwargs: dict[str, object] = dict(_BUILDER_KWARGS.get(name, {}))
    min_size = tuple(weights.meta["min_size"])
    if name.startswith("vit_"):
        kwargs["image_size"] = min_size[0]
    elif name.startswith("maxvit_"):
        kwargs["input_size"] = min_size
    return kwargs


def _torchvision_spec(name: str) -> ModelSpec:
    """Build the spec of a torchvision classifier from its default weights' metadata."""
    from torchvision.models import get_model, get_model_weights

    weights = get_model_weights(name).DEFAULT
    transforms = weights.transforms()
    crop, resize = int(transforms.crop_size[0]), int(transforms.resize_size[0])
    return ModelSpec(
        name=name,
        title=f"{name} (torchvision)",
        builder=functools.partial(get_model, name, weights=None, **_builder_kwargs(name, weights)),
        input_size=(crop, crop),
        resize=resize,
        crop=crop,
        mean=tuple(float(v) for v in transforms.mean),
        std=tuple(float(v) for v in transforms.std),
        class_names=tuple(weights.meta["categories"]),
        interpolation=transforms.interpolation.value,
        weights_url=weights.url,
        weights_name=weights.name,
    )


def _demo_spec(demo: BundledDemo) -> ModelSpec:
    """Build a bundled demo's spec from the metadata stored in its weights file."""
    if not demo.weights.is_file():
        raise ModelLoadError(
            f"The bundled weights of {demo.name!r} are missing ({demo.weights}). Reinstall the "
            f"package or recreate them with: python -m lrp_desktop_core.train_demo --model "
            f"{demo.name}"
        )
    with safe_open(str(demo.weights), framework="pt") as handle:
        metadata = handle.metadata() or {}
    class_names = tuple(json.loads(metadata["class_names"]))
    size = int(metadata["input_size"])
    return ModelSpec(
        name=demo.name,
        title=demo.title,
        builder=functools.partial(demo.build, len(class_names), metadata),
        input_size=(size, size),
        resize=size,
        crop=size,
        mean=tuple(json.loads(metadata["mean"])),
        std=tuple(json.loads(metadata["std"])),
        class_names=class_names,
        default_weights=demo.weights,
    )


@functools.cache
def get_spec(name: str) -> ModelSpec:
    """Return the spec of registry model ``name``; nothing is downloaded.

    Raises
    ------
    ModelLoadError
        If no model has that name.
    """
    if name in DEMOS:
        return _demo_spec(DEMOS[name])
    names = _torchvision_names()
    if name not in names:
        close = difflib.get_close_matches(name, list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(
            f"There is no model called {name!r}.{hint} list_models() gives every known name; "
            "a file path loads a model file instead."
        )
    return _torchvision_spec(name)


def pretrained_cache_path(spec: ModelSpec) -> Path:
    """Return where the torch hub cache keeps (or would keep) the pretrained weights of ``spec``."""
    if spec.weights_url is None:
        raise ModelLoadError(f"{spec.name} has no downloadable pretrained weights.")
    filename = Path(urlparse(spec.weights_url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def download_weights(
    url: str, destination: Path, progress: Callable[[int, int], None] | None = None
) -> None:
    """Download ``url`` to ``destination``, checking the hash prefix in torchvision file names.

    Parameters
    ----------
    url : str
        Where to download from.
    destination : Path
        The file to write; it appears only once the download is complete and checked.
    progress : callable, optional
        Called as ``progress(done_bytes, total_bytes)`` after every chunk; ``total_bytes`` is 0
        when the server does not say.

    Raises
    ------
    ModelLoadError
        If the download fails (offline, server error) or the file's hash is wrong; the message
        says where to put the file by hand.
    """
    partial = destination.with_name(destination.name + ".partial")
    expected = re.search(r"-([0-9a-f]{6,})\.", destination.name)
    digest = hashlib.sha256()
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(_DOWNLOAD_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (URLError, OSError, ValueError, http.client.HTTPException) as error:
        partial.unlink(missing_ok=True)
        raise ModelLoadError(
            f"Could not download {url} ({error}). If this computer is offline, download that file "
            f"elsewhere and put it here: {destination} . Or give a weights file instead (--weights "
            "on the command line, weights= in load_model)."
        ) from error
    if expected and not digest.hexdigest().startswith(expected.group(1)):
        partial.unlink(missing_ok=True)
        raise ModelLoadError(
            f"The file downloaded from {url} is damaged (its SHA-256 does not start with "
            f"{expected.group(1)}). Try again, or download it by hand to {destination} ."
        )
    partial.replace(destination)


def _adapt_torchvision_keys(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old DenseNet keys and drop GoogLeNet's auxiliary heads, as torchvision does."""
    if name.startswith("densenet"):
        return {_DENSENET_OLD_KEY.sub(r"\1\2.", key): value for key, value in state.items()}
    if name == "googlenet" and not _BUILDER_KWARGS["googlenet"]["aux_logits"]:
        return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    return state


def _model_from(spec: ModelSpec, content: WeightsFile) -> LoadedModel:
    """Return the model of ``spec`` with the weights (or the whole module) read from a file."""
    if content.module is not None:
        model = content.module
    else:
        with initialisers_skipped():  # the file replaces every parameter
            model = spec.builder()
        state = content.state_dict
        if spec.weights_url is not None:
            state = _adapt_torchvision_keys(spec.name, state)
        apply_state_dict(model, state, content.path, spec.name)
    return LoadedModel(spec, model.cpu().eval(), content.path, content.sha256)


def _module_spec(path: Path, module: nn.Module) -> ModelSpec:
    """Return a spec with ImageNet preprocessing for a module loaded from a file on its own."""
    crop = 224
    try:
        with torch.no_grad():
            probe = torch.zeros(1, 3, crop, crop, dtype=model_dtype(module))
            output = module.cpu().eval()(probe)
    except Exception as error:  # the module's own code; any failure means it cannot be used here
        raise ModelLoadError(
            f"The model in {path} does not run on a 1x3x{crop}x{crop} image ({error}). Only image "
            "classifiers taking (N, 3, H, W) input can be explained."
        ) from error
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        raise ModelLoadError(
            f"The model in {path} does not return (N, classes) logits, so it is not an image "
            "classifier this application can explain."
        )
    count = output.shape[1]
    from torchvision.models import get_model_weights

    imagenet = get_model_weights("resnet50").DEFAULT.meta["categories"]
    names = tuple(imagenet) if count == len(imagenet) else tuple(f"class {i}" for i in range(count))
    return ModelSpec(
        name=path.stem,
        title=f"{path.name} (model file)",
        builder=functools.partial(_trusted_module, path),
        input_size=(crop, crop),
        resize=256,
        crop=crop,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        class_names=names,
    )


def _trusted_module(path: Path) -> nn.Module:
    """Load the full module in ``path`` again (its file was trusted once already)."""
    module = read_weights(path, trust=True).module
    if module is None:
        raise ModelLoadError(f"{path} no longer holds a full model.")
    return module


def _random_model(spec: ModelSpec, seed: int | None) -> LoadedModel:
    """Build ``spec``'s network with random weights drawn from ``seed`` (a fresh one if None).

    The global random state is left as it was.
    """
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    logger.info(
        "%s has random weights (seed %d): pass pretrained=True or a weights file", spec.name, seed
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.builder().eval()
    return LoadedModel(spec, model, None, None, seed=seed)


def load_model(
    source: str | Path = DEFAULT_MODEL,
    weights: str | Path | None = None,
    *,
    pretrained: bool = False,
    progress: Callable[[int, int], None] | None = None,
    trust: bool = False,
    seed: int | None = None,
) -> LoadedModel:
    """Build and load a model; see the module documentation for the accepted forms.

    Parameters
    ----------
    source : str or Path
        A registry name (:func:`list_models`) or the path of a model file.
    weights : str or Path, optional
        A weights file for the registry architecture ``source``.
    pretrained : bool
        Load the torchvision ImageNet weights (from the hub cache, or downloaded). The demos always
        come with their bundled weights.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)`` while downloading.
    trust : bool
        Allow loading a fully pickled module or TorchScript archive, which runs code from the file.
        Only for files from a source you trust.
    seed : int, optional
        Seed of random weights (a registry architecture without ``pretrained`` or a weights file):
        the same seed gives the same weights. Without it a fresh seed is drawn and kept in the
        result. Refused where the weights are not random.

    Returns
    -------
    LoadedModel
        The model in eval mode on the CPU, its spec and where its weights came from.

    Raises
    ------
    ModelLoadError
        For an unknown name, a missing, damaged or unsuitable file, weights holding NaN or inf
        (naming the first such parameter or buffer), an untrusted code file, or a failed
        download; the message says what to do.
    """
    if pretrained and weights is not None:
        raise ValueError("give either pretrained=True or a weights file, not both")
    name = str(source)
    random_weights = (
        is_registered(name)
        and weights is None
        and not pretrained
        and get_spec(name).default_weights is None
    )
    if seed is not None and not random_weights:
        raise ValueError(
            f"a seed applies to random weights only; {name} gets its weights from a file here"
        )
    if random_weights:
        return _random_model(get_spec(name), seed)
    if is_registered(name):
        spec = get_spec(name)
        if weights is not None:
            return _model_from(spec, read_weights(Path(weights), trust=trust))
        if spec.default_weights is not None:
            return _model_from(spec, read_weights(spec.default_weights))
        cached = pretrained_cache_path(spec)
        if not cached.is_file():
            logger.info("downloading %s to %s", spec.weights_url, cached)
            download_weights(spec.weights_url, cached, progress)
        loaded = _model_from(spec, read_weights(cached))
        loaded.pretrained = spec.weights_name
        return loaded

    path = Path(source)
    looks_like_file = path.exists() or bool(path.suffix) or len(path.parts) > 1
    if weights is not None or not looks_like_file:
        get_spec(name)  # raises the unknown-name error, with suggestions
    content = read_weights(path, trust=trust)
    if content.module is not None:
        return LoadedModel(
            _module_spec(path, content.module), content.module.cpu().eval(), path, content.sha256
        )
    architecture = content.metadata.get("architecture")
    if not is_registered(architecture):
        raise ModelLoadError(
            f"{path} holds weights only and does not say which architecture they belong to. Name "
            f"it: load_model('resnet18', weights='{path}') (any name from list_models())."
        )
    return _model_from(get_spec(architecture), content)


def demo_samples() -> list[Path]:
    """Return the bundled sample images of the demos (their masks excluded), sorted by name."""
    return image_files(DEMO_SAMPLES_DIR)


def demo_mask(path: str | Path) -> np.ndarray | None:
    """Return the object mask (H, W) bool stored beside an image as ``<stem>_mask.png``, or None."""
    mask_path = mask_file(path)
    if not mask_path.is_file():
        return None
    with Image.open(mask_path) as mask:
        return np.asarray(mask.convert("L")) >= 128
