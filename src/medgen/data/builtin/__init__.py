"""Built-in datasets: no download, deterministic from a seed.

Each built-in makes item ``index`` on its own from ``(seed, index)``, so preparation can
run items in parallel worker processes and still give the same dataset.

| name           | real or simulated                                                    |
|----------------|----------------------------------------------------------------------|
| mni152         | real anatomy: the MNI152 2009 T1 template nilearn bundles, augmented |
| brain-lesions  | real MNI152 slices with simulated lesions (exact masks)              |
| breast-phantom | fully simulated mammography ROIs (1/f^beta texture, masses, calcs)   |
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class BuiltinSample:
    image: np.ndarray  # float32, shape == size (2D (H, W) or 3D (D, H, W)), non-negative intensities
    label: str
    mask: np.ndarray | None = None  # uint8 {0,1}, same shape as image; None when the item has none
    extra: dict[str, str] = field(default_factory=dict)  # extra index columns (e.g. cohort)


class Builtin(Protocol):
    name: str
    description: str
    simulated: bool  # True when the images are simulated, False for real anatomy
    default_size: tuple[int, ...]
    default_n: int
    labels: tuple[str, ...]
    supports_3d: bool

    def item(self, index: int, seed: int, size: tuple[int, ...]) -> BuiltinSample: ...


def get_builtin(name: str) -> Builtin:
    from medgen.data.builtin import breast_phantom, lesions, mni152
    from medgen.errors import UserError

    registry = {m.BUILTIN.name: m.BUILTIN for m in (mni152, lesions, breast_phantom)}
    if name.startswith("brain-lesions-"):  # graded tiers: brain-lesions-SIZE[-CONTRAST]
        return lesions.tier(name)
    if name not in registry:
        raise UserError(f"unknown built-in dataset '{name}'; choose one of {', '.join(sorted(registry))}")
    return registry[name]


def builtin_names() -> list[str]:
    return ["mni152", "brain-lesions", "breast-phantom"]
