"""Colour maps written in a small source language, and a lazily compiled cache of named maps.

A source is a comma-separated list of colour nodes, for example ``"00f,80:fff,f00"``:

* a colour is 6 hex digits (``ff8000``) or 3 hex digits, each doubled (``f80`` is ``ff8800``);
* a colour may be preceded by a position of 1 or 2 hex digits and a colon, on the scale 0 to 255
  (a single digit is doubled: ``8:`` is ``0x88``);
* a colour without a position is spread evenly between its neighbours, on whole steps rounded
  down; the first colour defaults to position 0 and the last to position 255;
* positions must rise strictly from node to node, and a map needs at least two colours.

Between nodes, colours are interpolated linearly; below the first node and above the last the end
colours are held.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch

__all__ = [
    "CMAPS",
    "ColorMap",
    "ColorMapError",
    "ColorNode",
    "LazyColorMapCache",
    "get_cmap",
]

_TOKEN = re.compile(r"^(?:(?P<position>[^:]*):)?(?P<color>[^:]*)$")
_HEX_POSITION = re.compile(r"^[0-9a-fA-F]{1,2}$")
_HEX_COLOR = re.compile(r"^(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_LUMA = np.array([0.299, 0.587, 0.114])

ArrayLike = np.ndarray | torch.Tensor


class ColorMapError(ValueError, RuntimeError):
    """A colour-map source that cannot be compiled (a RuntimeError too, as zennit raises).

    Attributes
    ----------
    token : str
        The offending token (empty for an empty token).
    index : int
        Index of the token in the comma-separated list.
    offset : int
        Character offset of the token in the source.
    """

    def __init__(self, problem: str, token: str, index: int, offset: int) -> None:
        super().__init__(f"{problem} in token {index} {token!r} at character {offset}")
        self.token = token
        self.index = index
        self.offset = offset


@dataclass(frozen=True)
class ColorNode:
    """One node of a colour map: a position on the scale 0 to 255 and an RGB colour (0 to 255)."""

    position: int
    color: tuple[int, int, int]


@dataclass(frozen=True)
class _Token:
    text: str
    index: int
    offset: int
    position: int | None
    color: tuple[int, int, int]


def _expand_hex(digits: str) -> str:
    """Double every digit of a short hex form (``f8`` -> ``ff88``); keep a long form."""
    return "".join(digit * 2 for digit in digits) if len(digits) in (1, 3) else digits


def _lex(source: str) -> list[_Token]:
    """Split ``source`` into tokens, checking each token's form."""
    if not source.strip():
        raise ColorMapError("empty source (write at least two comma-separated colours)", "", 0, 0)
    tokens = []
    offset = 0
    for index, raw in enumerate(source.split(",")):
        text = raw.strip()
        start = offset + (len(raw) - len(raw.lstrip()))
        offset += len(raw) + 1
        if not text:
            raise ColorMapError("empty token (remove the extra comma)", text, index, start)
        match = _TOKEN.match(text)
        if match is None:
            raise ColorMapError("more than one ':' (write 'position:colour')", text, index, start)
        position, color = match.group("position"), match.group("color")
        if position is not None and not _HEX_POSITION.match(position):
            raise ColorMapError(
                f"bad position {position!r} (use 1 or 2 hex digits before ':')", text, index, start
            )
        if not _HEX_COLOR.match(color):
            raise ColorMapError(f"bad colour {color!r} (use 3 or 6 hex digits)", text, index, start)
        rgb = bytes.fromhex(_expand_hex(color))
        tokens.append(
            _Token(
                text=text,
                index=index,
                offset=start,
                position=None if position is None else int(_expand_hex(position), 16),
                color=(rgb[0], rgb[1], rgb[2]),
            )
        )
    return tokens


def _check_rising(tokens: list[_Token], positions: dict[int, int]) -> None:
    """Raise for the first token whose position is not above the one before it."""
    numbers = sorted(positions)
    for previous, number in pairwise(numbers):
        if positions[number] <= positions[previous]:
            token = tokens[number]
            raise ColorMapError(
                f"position {positions[number]} is not above the previous position "
                f"{positions[previous]} (positions must rise from 0 to 255, leaving room for "
                "colours without a position)",
                token.text,
                token.index,
                token.offset,
            )


def _place(tokens: list[_Token]) -> list[ColorNode]:
    """Give every token a position: explicit, defaulted at the ends, or spread in between."""
    if len(tokens) < 2:
        token = tokens[0]
        raise ColorMapError(
            "a colour map needs at least two colours", token.text, token.index, token.offset
        )
    anchors = {
        number: token.position for number, token in enumerate(tokens) if token.position is not None
    }
    anchors.setdefault(0, 0)
    anchors.setdefault(len(tokens) - 1, 255)
    _check_rising(tokens, anchors)

    numbers = sorted(anchors)
    positions = {numbers[-1]: anchors[numbers[-1]]}
    for left, right in pairwise(numbers):
        rise = anchors[right] - anchors[left]
        for number in range(left, right):
            positions[number] = anchors[left] + rise * (number - left) // (right - left)
    _check_rising(tokens, positions)
    return [ColorNode(positions[number], token.color) for number, token in enumerate(tokens)]


class ColorMap:
    """A colour map compiled from a source string (see the module docstring for the language).

    Parameters
    ----------
    source : str
        The colour-map source, e.g. ``"00f,80:fff,f00"``.

    Raises
    ------
    ColorMapError
        A :class:`ValueError` naming the offending token, its index and its character offset.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    @property
    def source(self) -> str:
        """The source string; assigning a new one recompiles the map."""
        return self._source

    @source.setter
    def source(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a colour-map source must be a str, not {type(value).__name__}")
        nodes = _place(_lex(value))
        self._source = value
        self._nodes = tuple(nodes)
        self._positions = np.array([node.position for node in nodes]) / 255.0
        self._colors = np.array([node.color for node in nodes], dtype=np.float64) / 255.0

    @property
    def nodes(self) -> tuple[ColorNode, ...]:
        """The compiled nodes, with positions on the scale 0 to 255."""
        return self._nodes

    @property
    def diverging(self) -> bool:
        """Whether the middle colour is lighter or darker than both end colours.

        Such a map (``coldnhot``, ``bwr``, ...) has two sides around its centre; the magnitude
        display modes of :mod:`lrp_desktop_core.image` then use one side rather than the whole map.
        """
        luma = self._map(np.array([0.0, 0.5, 1.0])) @ _LUMA
        ends = luma[[0, 2]]
        return bool(luma[1] > ends.max() + 1e-6 or luma[1] < ends.min() - 1e-6)

    def _map(self, values: np.ndarray) -> np.ndarray:
        channels = [np.interp(values, self._positions, self._colors[:, c]) for c in range(3)]
        return np.stack(channels, axis=-1)

    def __call__(self, values: ArrayLike) -> ArrayLike:
        """Map values in [0, 1] (clipped) to RGB colours in [0, 1].

        Parameters
        ----------
        values : numpy.ndarray or torch.Tensor
            Values of any shape.

        Returns
        -------
        numpy.ndarray or torch.Tensor
            Same kind as ``values``, shape ``values.shape + (3,)``; a tensor keeps its device and
            its floating dtype (float32 for integer tensors), an array comes back as float64.
        """
        if isinstance(values, torch.Tensor):
            colors = self._map(values.detach().cpu().numpy().astype(np.float64))
            dtype = values.dtype if values.is_floating_point() else torch.float32
            return torch.from_numpy(colors).to(device=values.device, dtype=dtype)
        return self._map(np.asarray(values, dtype=np.float64))

    def palette(self, level: float = 1.0) -> np.ndarray:
        """Return a 256 x 3 uint8 colour table of the map.

        Parameters
        ----------
        level : float
            Contrast around the centre: entry ``i`` shows the map at
            ``clip((i / 255 - 0.5) * level + 0.5, 0, 1)``, so 1 gives the plain map, values above
            1 saturate sooner and values below 1 use only the middle of the map.

        Returns
        -------
        numpy.ndarray
            Shape (256, 3), dtype uint8.
        """
        values = np.clip((np.linspace(0.0, 1.0, 256) - 0.5) * level + 0.5, 0.0, 1.0)
        return np.round(self._map(values) * 255.0).astype(np.uint8)

    def __repr__(self) -> str:
        return f"ColorMap({self._source!r})"


class LazyColorMapCache(MutableMapping):
    """Named colour maps, each compiled the first time it is looked up.

    Parameters
    ----------
    sources : mapping of str to str
        Map names and their sources.
    """

    def __init__(self, sources: Mapping[str, str]) -> None:
        self._sources = dict(sources)
        self._compiled: dict[str, ColorMap] = {}

    def __getitem__(self, name: str) -> ColorMap:
        if name not in self._compiled:
            self._compiled[name] = ColorMap(self._sources[name])
        return self._compiled[name]

    def __setitem__(self, name: str, cmap: str | ColorMap) -> None:
        compiled = cmap if isinstance(cmap, ColorMap) else ColorMap(cmap)
        self._sources[name] = compiled.source
        self._compiled[name] = compiled

    def __delitem__(self, name: str) -> None:
        del self._sources[name]
        self._compiled.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)


CMAPS = LazyColorMapCache(
    {
        "gray": "000,fff",
        "wred": "fff,f00",
        "wblue": "fff,00f",
        "hot": "000,f00,ff0,fff",
        "cold": "000,00f,0ff",
        "coldnhot": "0ff,00f,80:000,f00,ff0,fff",
        "bwr": "00f,80:fff,f00",
        "france": "0055a4,80:fff,ef4135",
        "seismic": "0000d0,80:d0d0d0,d00000",
        "coolio": "00d0d0,80:d0d0d0,d000d0",
        "coleus": "00d000,80:d0d0d0,d000d0",
        "rdbu": "2166ac,4393c3,92c5de,d1e5f0,80:f7f7f7,fddbc7,f4a582,d6604d,b2182b",
        "coolwarm": "3b4cc0,6282ea,8db0fe,b8d0f9,80:dddddd,f5c4ad,f49a7b,de604d,b40426",
    }
)


def get_cmap(cmap: str | ColorMap) -> ColorMap:
    """Resolve a colour map given as a map, a name in :data:`CMAPS`, or a source string.

    Parameters
    ----------
    cmap : str or ColorMap
        A :class:`ColorMap` (returned as is), a name such as ``"coldnhot"``, or a source such as
        ``"00f,80:fff,f00"`` (anything with a ``,`` or ``:`` is read as a source).

    Returns
    -------
    ColorMap

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known names) or a bad source.
    """
    if isinstance(cmap, ColorMap):
        return cmap
    if not isinstance(cmap, str):
        raise TypeError(f"a colour map must be a name, a source or a ColorMap, not {cmap!r}")
    if cmap in CMAPS:
        return CMAPS[cmap]
    if "," in cmap or ":" in cmap:
        return ColorMap(cmap)
    raise ValueError(
        f"unknown colour map {cmap!r}; known maps: {', '.join(CMAPS)} "
        "(or write a source of at least two comma-separated colours, e.g. '00f,80:fff,f00')"
    )
