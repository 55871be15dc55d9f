"""The ``data`` section of ``params.yaml``, and ``train.augment`` (the data transforms apply it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..config import check_choices
from ..errors import ConfigError
from ..urls import check_no_credentials
from . import s3

Source = Literal["fashion-mnist", "vtab", "imagefolder"]
Draw = Literal["balanced", "stratified"]
OnBad = Literal["error", "skip"]
SOURCES: tuple[str, ...] = get_args(Source)


@dataclass
class DataConfig:
    """Which images to prepare, and how many.

    Attributes:
        source: ``fashion-mnist`` (IDX files), ``vtab`` (a VTAB-1k task directory: its
            ``train800.txt``/``val200.txt``/``test.txt`` are the splits, so ``train_size`` and
            ``val_size`` are not used) or ``imagefolder`` (``<class>/<image>`` folders).
        path: A local directory, or ``s3://bucket/prefix`` (mirrored into a local cache).
        train_size: Training images, drawn with ``seed`` from the training pool.
        val_size: Validation images, disjoint from train.
        test_size: None: the whole test split; else a seeded subset.
        calibration_size: Images of the training pool that train and val leave, drawn as a
            ``calibration`` split (0: none). Risk control (``dyn-adapter calibrate``)
            certifies exit thresholds on them; it needs no labels, so any images of the
            served distribution would do. VTAB-1k tasks have no such pool.
        selection_size: Further unused training images, drawn after calibration as a
            ``selection`` split (0: none): ``dyn-adapter ablate --split selection`` chooses a
            recipe on them, so that neither test (which reports) nor calibration (which
            certifies the chosen model) is read to choose it.
        draw: How each drawn split shares its images among classes: ``balanced`` (equal
            numbers) or ``stratified`` (in the pool's proportions, so that train/val and
            what is left for test keep the data's class proportions).
        seed: Seed of every random draw; same seed, same arrays.
        on_bad: ``error`` stops at the first bad image or list line; ``skip`` leaves it out,
            lists it in the manifest and warns (paths outside the data are never skipped).
        s3_endpoint_url: An S3-compatible endpoint for ``s3://`` paths; None for AWS.
            Credentials come from the environment (``AWS_ACCESS_KEY_ID`` etc.), never from here.
    """

    source: Source = "fashion-mnist"
    path: str = "/usr/share/datasets/fashion-mnist"
    train_size: int = 800
    val_size: int = 200
    test_size: int | None = None
    calibration_size: int = 0
    selection_size: int = 0
    draw: Draw = "balanced"
    seed: int = 0
    on_bad: OnBad = "error"
    s3_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        check_choices(self, "data")
        if not self.path:
            raise ConfigError("data.path: must be a directory or an s3://bucket/prefix URL")
        if s3.is_s3_url(self.path):
            s3.parse_url(self.path)
        for key in ("train_size", "val_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("calibration_size", "selection_size"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key}: must be >= 0, got {getattr(self, key)}")
        if self.test_size is not None and self.test_size < 1:
            raise ConfigError(f"data.test_size: must be >= 1 or null, got {self.test_size}")
        if self.seed < 0:
            raise ConfigError(f"data.seed: must be >= 0, got {self.seed}")
        if self.s3_endpoint_url is not None:
            _check_endpoint(self.s3_endpoint_url)


def _check_endpoint(url: str) -> None:
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise ConfigError(f"data.s3_endpoint_url: {url!r} is not an http(s):// URL")
    # The config is logged and stored in the manifest: no secrets in it.
    check_no_credentials(url, "data.s3_endpoint_url", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


@dataclass
class AugmentConfig:
    """Light, label-preserving training augmentation, applied per batch on tensors.

    Attributes:
        hflip: Probability of a horizontal flip.
        translate: Maximum shift as a fraction of the image size (random crop of a padded image).
    """

    hflip: float = 0.5
    translate: float = 0.1
