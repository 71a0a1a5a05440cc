"""What the modules that canonizers add to a model do, in words for tooltips and reports.

Canonizers put each operation on the relevance path behind a module so that it gets a rule; the
modules they add are children named ``canonizer_<part>`` (e.g. ``...self_attention.canonizer_q``).
:func:`describe_part` says what such a layer computes and how the usual rules treat it.
"""

from __future__ import annotations

__all__ = ["CANONIZER_PARTS", "describe_part"]

CANONIZER_PARTS: dict[str, str] = {
    "canonizer_q": (
        "Query projection of the attention: a linear layer over the query rows of the packed "
        "in-projection weight and bias (the same memory, nothing copied)."
    ),
    "canonizer_k": (
        "Key projection of the attention: a linear layer over the key rows of the packed "
        "in-projection weight and bias. Under CP-LRP keys get no relevance; under AttnLRP a share."
    ),
    "canonizer_v": (
        "Value projection of the attention: a linear layer over the value rows of the packed "
        "in-projection weight and bias. Under CP-LRP all relevance of the attention flows here."
    ),
    "canonizer_core": (
        "Attention core: softmax(q k^T / sqrt(d) + bias + mask) v per head. CP-LRP holds the "
        "attention weights constant and passes relevance to the values (conserved); AttnLRP also "
        "gives queries and keys a share, and its softmax does not conserve relevance."
    ),
    "canonizer_attention_sum": (
        "Residual addition after the attention branch: under the presets' Norm rule, relevance goes"
        " to the shortcut and the branch in proportion to their contributions."
    ),
    "canonizer_mlp_sum": (
        "Residual addition after the MLP branch: under the presets' Norm rule, relevance goes"
        " to the shortcut and the branch in proportion to their contributions."
    ),
    "canonizer_sum": (
        "Residual addition of the block: under the presets' Norm rule, relevance goes"
        " to the shortcut and the branch in proportion to their contributions."
    ),
    "canonizer_position": (
        "Adds the learned position embedding, a constant: the share of relevance it takes is "
        "absorbed (like a bias's)."
    ),
    "canonizer_token": (
        "Puts the learned class token in front of the patch tokens; the token is a constant, so "
        "the relevance it receives is absorbed."
    ),
    "canonizer_product": (
        "Squeeze-and-excitation product of the features and their channel gates: the features "
        "(the signal) take all relevance, the gates none."
    ),
    "canonizer_scale": "Layer scale: a per-channel factor, passes relevance on unchanged.",
    "canonizer_transform": (
        "Input transform of GoogLeNet and Inception v3 (a per-channel affine map): passes "
        "relevance on unchanged."
    ),
    "canonizer_pool": (
        "Average pooling that the model's forward did inline: relevance goes back in proportion "
        "to each input's contribution."
    ),
    "canonizer_relu": "The ReLU that the model's forward applied inline.",
}
"""What each module a canonizer adds does, by its attribute name."""


def describe_part(name: str) -> str | None:
    """Return what the layer ``name`` does if a canonizer added it, else None.

    Parameters
    ----------
    name : str
        A layer name as in ``model.named_modules()``, e.g.
        ``"encoder.layers.encoder_layer_0.self_attention.canonizer_q"``.

    Returns
    -------
    str or None
        The description, or None for the model's own layers.
    """
    return CANONIZER_PARTS.get(name.rsplit(".", 1)[-1])
