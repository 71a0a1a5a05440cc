"""The catalogue: everything a user can choose, registered once, with no torch imported.

Methods, presets, canonizer sets, model families, export formats, colour maps, overlay styles,
heatmap modes, perturbation fills and evaluation scores each have one :class:`Catalogue` here.
An entry carries its name, its title (for menus) and its description (for tooltips, ``--help``
and the docs); where the implementation is looked up by name, the entry's ``target``
(``"module:attribute"``) says where it lives, so the catalogue never imports the engine. The app's
menus and tooltips, the command line's choices and the README read these catalogues; the engine's
own registries are built from them or kept equal to them by tests. LRP rules are the exception:
they are catalogued by the engine (``rulemap.RULE_CHOICES``, with ``rules.RULE_DESCRIPTIONS``),
since no command line offers them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "CANONIZER_SETS",
    "COLOUR_MAPS",
    "DEFAULT_EXPORT_FORMATS",
    "DEFAULT_MODEL",
    "DEMO_NAMES",
    "EXPORT_FORMATS",
    "FILLS",
    "HEATMAP_MODES",
    "METHODS",
    "MODEL_FAMILIES",
    "OTHER_METHODS",
    "OVERLAY_STYLES",
    "PRESETS",
    "SCORES",
    "Catalogue",
    "Entry",
    "ExportFormat",
    "MethodEntry",
    "Param",
    "export_formats",
]


@dataclass(frozen=True)
class Entry:
    """One choice: its name, its title for menus and its description for tooltips and docs.

    Parameters
    ----------
    name : str
        The key programs and command lines use, e.g. ``"epsilon_plus"``.
    title : str
        The name shown to people, e.g. ``"Epsilon-Plus"``.
    description : str
        One or a few plain sentences; the tooltip. Required: an entry without one is refused.
    target : str, optional
        Where the implementation lives, as ``"package.module:attribute"`` (see :meth:`load`).
    """

    name: str
    title: str
    description: str
    target: str = ""

    def __post_init__(self) -> None:
        if not (self.name and self.title and self.description.strip()):
            raise ValueError(f"catalogue entry {self.name!r} needs a name, title and description")

    def load(self) -> Any:
        """Import and return the implementation named by :attr:`target`."""
        if not self.target:
            raise LookupError(f"{self.name!r} names no implementation")
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Param:
    """A setting of a method: its name, default value and tooltip."""

    name: str
    default: int | float
    description: str

    def __post_init__(self) -> None:
        if not self.description.strip():
            raise ValueError(f"the parameter {self.name!r} needs a description")


@dataclass(frozen=True)
class MethodEntry(Entry):
    """An attribution method: an :class:`Entry` with its settings and how its sum is read.

    Parameters
    ----------
    caption : str
        The short label of a result, formatted with the method's settings, e.g.
        ``"SmoothGrad ({n_iter} x {noise_level:g})"``; the title when empty.
    params : tuple of Param
        Every setting the method accepts, with its default.
    conservation : str
        Why the relevance sums to (about) the explained logit; empty for methods whose scores are
        no share of the logit.
    class_agnostic : bool
        Whether the map is the same for every class (then no conservation figure applies).
    """

    caption: str = ""
    params: tuple[Param, ...] = ()
    conservation: str = ""
    class_agnostic: bool = False

    @property
    def conserving(self) -> bool:
        """Whether the relevance is meant to add up to the explained output."""
        return bool(self.conservation)

    def defaults(self) -> dict[str, int | float]:
        """Return every setting with its default value."""
        return {param.name: param.default for param in self.params}

    def label(self, settings: Mapping[str, Any]) -> str:
        """Return the caption of a result computed with ``settings``."""
        return (self.caption or self.title).format(**settings)


@dataclass(frozen=True)
class ExportFormat(Entry):
    """A file :func:`~.export.save_explanation` writes per image, and whether it is a default."""

    default: bool = True
    aliases: tuple[str, ...] = ()


E = TypeVar("E", bound=Entry)


@dataclass(frozen=True)
class Catalogue(Mapping[str, E], Generic[E]):
    """An ordered, read-only set of entries by name.

    Parameters
    ----------
    kind : str
        What the entries are, for messages ("method", "preset", ...).
    entries : tuple of Entry
        The entries, in the order menus show them.
    default : str, optional
        The name chosen when none is given; the first entry's when empty.
    """

    kind: str
    entries: tuple[E, ...]
    default: str = ""
    _by_name: dict[str, E] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {entry.name: entry for entry in self.entries}
        if len(by_name) != len(self.entries):
            raise ValueError(f"two {self.kind} entries share a name")
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "default", self.default or self.entries[0].name)
        if self.default not in by_name:
            raise ValueError(f"the default {self.kind} {self.default!r} is not an entry")

    def __getitem__(self, name: str) -> E:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of {self.choices()}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        """The entries' names, in order."""
        return tuple(self._by_name)

    def choices(self) -> str:
        """Return the names as a comma-separated list, for messages."""
        return ", ".join(self._by_name)

    def title(self, name: str) -> str:
        """Return the title of ``name``, or ``name`` itself for an unknown one."""
        entry = self._by_name.get(name)
        return name if entry is None else entry.title

    def description(self, name: str) -> str:
        """Return the description of ``name``, or ``""`` for an unknown one."""
        entry = self._by_name.get(name)
        return "" if entry is None else entry.description


# -- models ----------------------------------------------------------------------------------

#: The bundled demo models (keys of :data:`~.demos.DEMOS`).
DEMO_NAMES = ("demo", "demo_vit")

#: The model a command opens when none is named (:data:`~.models.DEFAULT_MODEL`).
DEFAULT_MODEL = "demo"

_TV = "torchvision.models"
MODEL_FAMILIES: Catalogue[Entry] = Catalogue(
    "model family",
    (
        Entry(
            "resnet",
            "ResNet",
            "Residual CNNs (also ResNeXt and Wide ResNet): batch norms are "
            "merged and every residual addition becomes a Sum layer with a rule",
            f"{_TV}:ResNet",
        ),
        Entry(
            "vgg", "VGG", "Plain stacks of convolutions, with or without batch norm", f"{_TV}:VGG"
        ),
        Entry(
            "alexnet",
            "AlexNet",
            "The first deep ImageNet CNN: convolutions, pooling and dense layers",
            f"{_TV}:AlexNet",
        ),
        Entry(
            "squeezenet",
            "SqueezeNet",
            "Fire modules whose two expand branches are concatenated",
            f"{_TV}:SqueezeNet",
        ),
        Entry(
            "densenet",
            "DenseNet",
            "Every block's input is concatenated to its output; the "
            "pre-activation batch norms are handled as layers with rules",
            f"{_TV}:DenseNet",
        ),
        Entry(
            "googlenet",
            "GoogLeNet",
            "Inception modules; its input transform becomes a layer",
            f"{_TV}:GoogLeNet",
        ),
        Entry(
            "inception_v3",
            "Inception v3",
            "Factorised inception modules; its input transform and inline pooling become layers",
            f"{_TV}:Inception3",
        ),
        Entry(
            "mobilenet_v2",
            "MobileNetV2",
            "Inverted residual blocks with depth-wise convolutions",
            f"{_TV}:MobileNetV2",
        ),
        Entry(
            "mobilenet_v3",
            "MobileNetV3",
            "Inverted residuals with squeeze-and-excitation products, which become Product layers",
            f"{_TV}:MobileNetV3",
        ),
        Entry("mnasnet", "MNASNet", "Searched inverted residual blocks", f"{_TV}:MNASNet"),
        Entry(
            "efficientnet",
            "EfficientNet",
            "V1 and V2: inverted residuals with squeeze-and-excitation and stochastic depth",
            f"{_TV}:EfficientNet",
        ),
        Entry(
            "regnet",
            "RegNet",
            "X and Y: residual bottlenecks, Y with squeeze-and-excitation",
            f"{_TV}:RegNet",
        ),
        Entry(
            "convnext",
            "ConvNeXt",
            "Modernised ResNets with layer norms and layer scales, which become layers with rules",
            f"{_TV}:ConvNeXt",
        ),
        Entry(
            "shufflenet_v2",
            "ShuffleNetV2",
            "Channel split, shuffle and concatenation",
            f"{_TV}:ShuffleNetV2",
        ),
        Entry(
            "vit",
            "Vision Transformer",
            "Patch embedding and multi-head self-attention, run "
            "through attention cores that take the attention rules",
            f"{_TV}:VisionTransformer",
        ),
        Entry(
            "swin",
            "Swin Transformer",
            "Shifted-window attention (V1) with relative position "
            "bias, run through attention cores",
            f"{_TV}:SwinTransformer",
        ),
        Entry(
            "maxvit",
            "MaxViT",
            "Block and grid attention with relative positions, MBConv "
            "blocks and merged pre-norm batch norms",
            f"{_TV}:MaxVit",
        ),
    ),
)
"""The model families whose every operation on the relevance path has a module and a rule; the
target is the class a model (or a subclass of it) is recognised by, see :mod:`.recommend`."""

# -- attribution methods ---------------------------------------------------------------------

METHODS: Catalogue[MethodEntry] = Catalogue(
    "method",
    (
        MethodEntry(
            "lrp",
            "LRP (rules per layer)",
            "Layer-wise Relevance Propagation with the rule of each layer set in the tree",
            conservation="LRP passes the explained logit back layer by layer, so relevance sums "
            "to about that logit, not exactly: epsilon rules absorb a share in their stabiliser, "
            "biases (and BatchNorm shifts merged into them) take or add theirs, and the first "
            "layer's rule spreads what reaches the input. A preset thus gives somewhat less or "
            "more than 100 %; far off hints at an operation without a rule.",
        ),
        MethodEntry(
            "gradient",
            "Gradient",
            "The gradient of the explained logit with respect to the input",
        ),
        MethodEntry(
            "smoothgrad",
            "SmoothGrad",
            "The gradient averaged over noisy copies of the input",
            caption="SmoothGrad ({n_iter} x {noise_level:g})",
            params=(
                Param(
                    "noise_level",
                    0.1,
                    "Standard deviation of the noise, relative to the input's range",
                ),
                Param("n_iter", 20, "Number of noisy copies"),
                Param("seed", 0, "Seed of the noise, so results repeat"),
            ),
        ),
        MethodEntry(
            "integrated_gradients",
            "Integrated Gradients",
            "Input times the gradient averaged along the path from a black image to the input",
            caption="Integrated Gradients ({n_iter} steps)",
            params=(Param("n_iter", 20, "Number of steps along the path"),),
            conservation="Integrated Gradients sums to the logit minus the logit of its baseline "
            "(completeness), up to the error of its finite steps.",
        ),
        MethodEntry(
            "occlusion",
            "Occlusion",
            "How much the explained logit drops when a square of the image is blacked out",
            caption="Occlusion ({window} px, stride {stride})",
            params=(
                Param("window", 8, "Side of the occluding square in pixels"),
                Param("stride", 8, "Step between occluding squares in pixels"),
                Param("batch_size", 64, "Occluded copies per forward pass (memory versus speed)"),
            ),
        ),
        MethodEntry(
            "rollout",
            "Attention rollout",
            "Attention rollout (Abnar and Zuidema 2020): how much each patch flows into the class "
            "token through all attention layers. Vision Transformers with a class token only; "
            "class-agnostic: the same map for every class",
            class_agnostic=True,
        ),
    ),
)
"""The attribution methods (kinds of :class:`~.explain.Method`); ``"lrp"`` comes first."""

# -- LRP set-ups -----------------------------------------------------------------------------

#: The methods a comparison panel shows besides LRP with a preset or the current rules.
OTHER_METHODS = tuple(kind for kind in METHODS if kind != "lrp")

_COMPOSITES = "lrp_desktop_core.composites"
PRESETS: Catalogue[Entry] = Catalogue(
    "preset",
    (
        Entry(
            "epsilon_gamma_box",
            "Epsilon-Gamma-Box",
            "The recommended LRP setting for image classifiers: the first convolution uses the "
            "input range (ZBox), further convolutions favour positive evidence (Gamma) and the "
            "dense layers use Epsilon. Produces sharp, readable heatmaps for VGG- and ResNet-style "
            "models.",
            f"{_COMPOSITES}:EpsilonGammaBox",
        ),
        Entry(
            "vit_cp",
            "ViT CP-LRP",
            "For Vision Transformers and other attention models: the attention weights are held "
            "constant, so relevance flows through the values (CP-LRP); layer norms are explained "
            "with their spread fixed, MLP layers favour positive evidence (Gamma), the patch "
            "embedding uses the input range (ZBox) and the other dense layers use Epsilon.",
            f"{_COMPOSITES}:AttentionConservativeGammaBox",
        ),
        Entry(
            "vit_attnlrp",
            "ViT AttnLRP",
            "AttnLRP for Vision Transformers and other attention models: relevance reaches "
            "queries, keys and values of every attention, and all layers with weights use "
            "Epsilon. The softmax absorbs part of the relevance, so the heatmap does not sum to "
            "the logit.",
            f"{_COMPOSITES}:AttentionEpsilon",
        ),
        Entry(
            "epsilon_plus",
            "Epsilon-Plus",
            "Convolutions keep only positive contributions (ZPlus) and dense layers use Epsilon. "
            "Heatmaps show the evidence for a class; they are robust and rarely noisy.",
            f"{_COMPOSITES}:EpsilonPlus",
        ),
        Entry(
            "epsilon_alpha2_beta1",
            "Epsilon-Alpha2-Beta1",
            "Convolutions weigh positive contributions twice and subtract negative ones "
            "(AlphaBeta, alpha 2, beta 1); dense layers use Epsilon. Shows evidence for and "
            "against a class.",
            f"{_COMPOSITES}:EpsilonAlpha2Beta1",
        ),
        Entry(
            "epsilon_plus_flat",
            "Epsilon-Plus-Flat",
            "Like Epsilon-Plus, but the first layer spreads relevance evenly over its receptive "
            "field (Flat). Use it when the input values themselves should not shape the heatmap, "
            "e.g. for smoother, less texture-driven maps.",
            f"{_COMPOSITES}:EpsilonPlusFlat",
        ),
        Entry(
            "epsilon_alpha2_beta1_flat",
            "Epsilon-Alpha2-Beta1-Flat",
            "Like Epsilon-Alpha2-Beta1, but the first layer spreads relevance evenly over its "
            "receptive field (Flat). Shows evidence for and against a class with smoother maps.",
            f"{_COMPOSITES}:EpsilonAlpha2Beta1Flat",
        ),
        Entry(
            "deconvnet",
            "DeconvNet",
            "DeconvNet: ReLUs pass back only the positive part of the signal. Not an LRP method; "
            "produces edge-like pictures of features, mostly independent of the chosen class.",
            f"{_COMPOSITES}:DeconvNet",
        ),
        Entry(
            "guided_backprop",
            "Guided backprop",
            "Guided backpropagation: ReLUs pass back the gradient only where both the gradient "
            "and their input are positive. Not an LRP method; gives crisp, fine-grained pictures "
            "that depend little on the chosen class.",
            f"{_COMPOSITES}:GuidedBackprop",
        ),
        Entry(
            "excitation_backprop",
            "Excitation backprop",
            "Excitation backprop: every layer with weights keeps only positive contributions "
            "(ZPlus). A probabilistic, top-down attention map; coarse but class-specific.",
            f"{_COMPOSITES}:ExcitationBackprop",
        ),
        Entry(
            "beta_smooth",
            "Beta-smooth",
            "The gradient of a smoothed network: each ReLU is treated as a softplus. Less noisy "
            "than the plain gradient; not an LRP method.",
            f"{_COMPOSITES}:BetaSmooth",
        ),
    ),
)
"""The named composites (keys of :data:`~.composites.COMPOSITES`)."""

CANONIZER_SETS: Catalogue[Entry] = Catalogue(
    "canonizer set",
    (
        Entry("none", "None", "Use the model as it is"),
        Entry(
            "merge_batchnorm",
            "Merge batch norms",
            "Fold each batch normalisation into the layer before it",
        ),
        Entry(
            "vgg",
            "VGG",
            "Canonizer for torchvision VGG models (folds batch normalisation)",
        ),
        Entry(
            "resnet",
            "ResNet",
            "Canonizer for torchvision ResNets: folds batch normalisation and turns each "
            "residual addition into a Sum layer that takes a rule",
        ),
        Entry(
            "torchvision",
            "torchvision",
            "Canonizer for every torchvision CNN: folds batch normalisation and turns residual "
            "additions, squeeze-and-excitation products, layer scales, input transforms and "
            "inline pooling into layers that take rules",
        ),
    ),
)
"""How a model is rewritten before rules are attached (keys of :data:`~.canonizers.CANONIZERS`)."""

# -- pictures and files ----------------------------------------------------------------------

COLOUR_MAPS: Catalogue[Entry] = Catalogue(
    "colour map",
    (
        Entry("gray", "gray", "Black to white"),
        Entry("wred", "wred", "White to red"),
        Entry("wblue", "wblue", "White to blue"),
        Entry("hot", "hot", "Black, red, yellow, white"),
        Entry("cold", "cold", "Black, blue, cyan"),
        Entry(
            "coldnhot",
            "coldnhot",
            "zennit's default: negative cyan to blue, zero black, positive red to white",
        ),
        Entry("bwr", "bwr", "Pure blue, white, pure red"),
        Entry("france", "france", "Blue, white, red in the flag's shades"),
        Entry("seismic", "seismic", "Dark blue, light grey, dark red"),
        Entry("coolio", "coolio", "Cyan, light grey, magenta"),
        Entry("coleus", "coleus", "Green, light grey, magenta"),
        Entry(
            "rdbu",
            "rdbu",
            "Blue, white, red in steps of even lightness; safe for colour-blind "
            "readers and in print, also in greyscale (ColorBrewer's RdBu colours)",
        ),
        Entry(
            "coolwarm",
            "coolwarm",
            "Perceptually uniform diverging map: cool blue, grey, warm "
            "red of equal lightness on both sides (Moreland's cool-warm colours); safe for "
            "colour-blind readers",
        ),
    ),
    default="coldnhot",
)
"""The named colour maps (keys of :data:`~.cmap.CMAPS`), with what each is for."""

OVERLAY_STYLES: Catalogue[Entry] = Catalogue(
    "overlay style",
    (
        Entry(
            "greyscale",
            "greyscale",
            "The heatmap at a uniform opacity over the image in grey: "
            "positive and negative relevance both show, and no colour of the photo can be "
            "mistaken for relevance",
        ),
        Entry(
            "weighted",
            "weighted",
            "The heatmap over the image in colour, each pixel as opaque "
            "as its relevance is strong: only the strongest evidence shows",
        ),
        Entry(
            "contour",
            "contour",
            "Lines around the regions of top relevance (25, 50 and 75 % "
            "of the scale) over the image in grey; good for print",
        ),
    ),
)
"""How an overlay lays the heatmap over the image (:data:`~.image.OVERLAY_STYLES`)."""

HEATMAP_MODES: Catalogue[Entry] = Catalogue(
    "heatmap mode",
    (
        Entry(
            "signed",
            "signed",
            "Positive relevance (evidence for the class) and negative "
            "(against) in the two halves of the colour map",
        ),
        Entry("positive", "positive", "Only the evidence for the class"),
        Entry("negative", "negative", "Only the evidence against the class"),
        Entry("absolute", "absolute", "How much each pixel matters, whatever the sign"),
    ),
)
"""Which relevance is coloured (the modes of :func:`~.image.heatmap_bounds`)."""

EXPORT_FORMATS: Catalogue[ExportFormat] = Catalogue(
    "export format",
    (
        ExportFormat(
            "overlay", "overlay", "<stem>_overlay.png: the heatmap over the image", aliases=("png",)
        ),
        ExportFormat("heatmap", "heatmap", "<stem>_heatmap.png: the coloured relevance alone"),
        ExportFormat("npy", "relevance", "<stem>.npy: the raw relevance, C x H x W"),
        ExportFormat("json", "record", "<stem>.json: a record of every setting and the prediction"),
        ExportFormat(
            "side_by_side",
            "side by side",
            "<stem>_side_by_side.png: input | heatmap | overlay",
            default=False,
        ),
    ),
)
"""The files written per image (:func:`~.export.save_explanation`)."""

DEFAULT_EXPORT_FORMATS = tuple(name for name, entry in EXPORT_FORMATS.items() if entry.default)
"""The formats written when none are chosen."""


def export_formats(names: Iterable[str]) -> tuple[str, ...]:
    """Check export format names and resolve aliases (``png`` is ``overlay``).

    Parameters
    ----------
    names : sequence of str
        Names or aliases of :data:`EXPORT_FORMATS`.

    Returns
    -------
    tuple of str
        The formats, in the order given, without repeats.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    """
    aliases = {alias: entry.name for entry in EXPORT_FORMATS.values() for alias in entry.aliases}
    resolved = [aliases.get(name, name) for name in names]
    unknown = sorted(set(resolved) - set(EXPORT_FORMATS))
    if unknown:
        choices = ", ".join((*EXPORT_FORMATS, *aliases))
        raise ValueError(f"unknown export format(s) {', '.join(unknown)}; choose from {choices}")
    return tuple(dict.fromkeys(resolved))


# -- evaluation ------------------------------------------------------------------------------

FILLS: Catalogue[Entry] = Catalogue(
    "fill",
    (
        Entry("zeros", "zeros", "The value zero (after normalisation)"),
        Entry("mean", "mean", "The image's per-channel mean"),
        Entry(
            "uniform",
            "uniform",
            "Uniform noise between the image's per-channel minimum and maximum (seeded)",
        ),
        Entry("blur", "blur", "A blurred copy of the image"),
    ),
    default="blur",
)
"""How removed regions are filled in region perturbation (:data:`~.evaluate.FILLS`)."""

SCORES: Catalogue[Entry] = Catalogue(
    "score",
    (
        Entry(
            "morf_aopc",
            "AOPC MoRF",
            "How fast the logit falls when the most relevant regions "
            "are removed first (higher is better)",
        ),
        Entry(
            "lerf_aopc",
            "AOPC LeRF",
            "How fast the logit falls when the least relevant regions "
            "are removed first (lower is better)",
        ),
        Entry(
            "random_aopc",
            "AOPC random",
            "The same for regions removed in random order, the baseline",
        ),
        Entry(
            "mass_accuracy", "mass acc.", "Share of the positive relevance inside the object mask"
        ),
        Entry(
            "rank_accuracy",
            "rank acc.",
            "Share of the mask's pixels among the most relevant pixels, as many as the mask has",
        ),
    ),
)
"""The scores of a heatmap that records and reports give (:mod:`.evaluate`)."""
