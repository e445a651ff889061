"""A judge for agents that paint from scratch: a small classifier and what it says about samples.

An unconditional agent has no target to compare with, so its paintings are judged the way
generative models of digits are: by a classifier trained on the real training split.

- Confident share: the fraction of samples the classifier assigns to one class with
  probability >= 0.9. Scribbles that look like no digit score low.
- Class histogram: which classes the samples fall in. A generator that paints only ones has
  collapsed, however confident the classifier is about them.
- Fréchet distance in the classifier's feature space (its penultimate layer), between the
  samples and real held-out images: the FID formula, with a judge that knows digits instead
  of Inception, which knows photos. It sees both quality and diversity.

A Fréchet distance has no natural scale and shrinks with the number of images, so every
report also measures it between the same number of real test images and the other half of
the test split: the floor a perfect generator would reach.

A classifier folder holds ``classifier.json`` (what it judges, its test accuracy) and
``classifier.pt`` (a plain ``state_dict``, read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from envs.storage import FileFormat, write_folder
from spiral.agent import PAINT_BATCH, Agent, load_weights
from spiral.shipped import AGENTS_DIR

CLASSIFIER_FORMAT = FileFormat("spiral-classifier", 1, "spiral classifier manifest")
SUPPORTED = ("mnist", "fashion-mnist")
INPUT_SIZE = 32
CONFIDENT = 0.9
DEFAULT_DIR = AGENTS_DIR / "classifiers"

_UNSUPPORTED = {
    "glyphs": "its test split holds characters never seen in training, so a classifier of the training "
              "characters cannot name them",
    "photos": "its labels are the source photos, and the test photos are never in training",
    "lfw": "it has no class labels",
}


class Classifier(nn.Module):
    """Three conv blocks, a feature layer and the class logits; any image size is resized to 32x32.

    Small on purpose: it trains in a minute or two on a laptop's CPU (batch norm makes a few
    epochs enough), and its 64 features keep the Fréchet distance's covariances well estimated
    from a hundred samples.
    """

    def __init__(self, num_classes: int, channels: int = 1, width: int = 16, features: int = 64):
        super().__init__()
        self.num_classes, self.channels, self.width, self.num_features = num_classes, channels, width, features

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            return [nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(), nn.MaxPool2d(2)]

        self.trunk = nn.Sequential(*block(channels, width), *block(width, 2 * width), *block(2 * width, 4 * width),
                                   nn.Flatten(), nn.Linear(4 * width * (INPUT_SIZE // 8) ** 2, features), nn.ReLU())
        self.head = nn.Linear(features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations, (N, features), of images (N, C, H, W) in [0, 1]."""
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="area")  # averages: thin strokes survive
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def config(self) -> dict[str, int]:
        return {"num_classes": self.num_classes, "channels": self.channels, "width": self.width,
                "features": self.num_features, "input_size": INPUT_SIZE}


def to_tensor(images: np.ndarray, channels: int) -> torch.Tensor:
    """uint8 (N, H, W, C) images as float (N, channels, H, W) in [0, 1]; colour is averaged to grey for 1 channel."""
    images = np.asarray(images)
    if channels == 1:
        x = images.mean(axis=-1, keepdims=True, dtype=np.float32)
    else:
        x = images[..., :channels].astype(np.float32)
    return torch.from_numpy(x / 255).permute(0, 3, 1, 2)


@torch.no_grad()
def predict(classifier: Classifier, images: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities (N, classes), features (N, features)) of uint8 (N, H, W, C) images."""
    classifier.eval()
    probabilities, features = [], []
    for start in range(0, len(images), batch_size):
        h = classifier.features(to_tensor(images[start:start + batch_size], classifier.channels))
        probabilities.append(torch.softmax(classifier.head(h), dim=1).numpy())
        features.append(h.numpy())
    return np.concatenate(probabilities), np.concatenate(features)


def check_supported(dataset: str) -> None:
    """Raise a ValueError saying why, for a dataset whose test images a classifier cannot judge."""
    if dataset in SUPPORTED:
        return
    reason = _UNSUPPORTED.get(dataset, "it has no class labels" if dataset.startswith("folder:") else "it is unknown")
    raise ValueError(f"No classifier can judge {dataset!r}: {reason}. Classifiers are trained for "
                     f"{', '.join(SUPPORTED)}.")


def train_classifier(dataset: str, epochs: int = 4, seed: int = 0, progress: bool = True, limit: int | None = None,
                     batch_size: int = 128, lr: float = 2e-3) -> tuple[Classifier, float]:
    """Train on the dataset's real training split; return the classifier and its test accuracy.

    Each image is shifted by up to 2 pixels and scaled by up to 10% at random, so that the judge
    does not depend on the exact placement and size of the dataset's images, which an agent's
    strokes need not copy. The learning rate decays linearly to zero; the epochs are fixed, so the test split
    picks nothing and its accuracy is an honest estimate. ``limit`` keeps that many images per
    split (quick tests).
    """
    from spiral.datasets import load_dataset

    check_supported(dataset)
    data = load_dataset(dataset, INPUT_SIZE, limit=limit, seed=seed)
    classifier = fit_classifier(data.train, data.labels_train, data.num_classes, epochs, seed, progress, batch_size,
                                lr, desc=f"classifier {dataset}")
    return classifier, accuracy(classifier, data.test, data.labels_test)


def fit_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, epochs: int = 4, seed: int = 0,
                   progress: bool = True, batch_size: int = 128, lr: float = 2e-3, desc: str = "classifier"
                   ) -> Classifier:
    """A ``Classifier`` trained on uint8 (N, H, W, C) images and their int labels (seen in grey), each image
    jittered as ``train_classifier`` says, the learning rate decaying linearly to zero over ``epochs``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    classifier = Classifier(num_classes)
    x, y = to_tensor(images, 1), torch.as_tensor(np.asarray(labels, np.int64))
    steps = epochs * math.ceil(len(x) / batch_size)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    classifier.train()
    with tqdm(total=steps, desc=desc, disable=not progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch_size):
                batch = order[start:start + batch_size]
                loss = F.cross_entropy(classifier(_jitter(x[batch], generator)), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    _recompute_batch_norm(classifier, x[:10_000], batch_size)
    return classifier


@torch.no_grad()
def _recompute_batch_norm(classifier: Classifier, images: torch.Tensor, batch_size: int) -> None:
    """Batch norm's running statistics trail the weights by some ten batches: measure them for the final weights.

    Without this a short training (a test's) predicts one class for everything; after a long
    one it changes little.
    """
    norms = [module for module in classifier.modules() if isinstance(module, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the batches below
    classifier.train()
    for start in range(0, len(images), batch_size):
        classifier(images[start:start + batch_size])
    for norm in norms:
        norm.momentum = 0.1
    classifier.eval()


def _jitter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts (up to 2 px of 32) and scales (0.9 to 1.1), one per image, filled with black."""
    n = len(x)
    scale = torch.empty(n).uniform_(0.9, 1.1, generator=generator)
    shift = torch.empty(n, 2).uniform_(-2 / 16, 2 / 16, generator=generator)  # affine_grid's units: half the image
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def accuracy(classifier: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of images whose most likely class is their label."""
    probabilities, _ = predict(classifier, images)
    return float(np.mean(probabilities.argmax(axis=1) == np.asarray(labels)))


# --- saving and loading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judge:
    """A loaded classifier with what it was trained on and how well it did."""

    classifier: Classifier
    dataset: str
    test_accuracy: float
    path: Path


def save_classifier(folder: str | Path, classifier: Classifier, dataset: str, test_accuracy: float,
                    **extra: Any) -> Path:
    """Write ``classifier.json`` and ``classifier.pt`` atomically (a reader never sees half a folder)."""
    info = CLASSIFIER_FORMAT.stamp({"dataset": dataset, **classifier.config(), "test_accuracy": test_accuracy,
                                    **extra})

    def fill(staging: Path) -> None:
        torch.save(classifier.state_dict(), staging / "classifier.pt")
        (staging / "classifier.json").write_text(json.dumps(info, indent=2))

    return write_folder(folder, fill)


def load_classifier(folder: str | Path, dataset: str | None = None) -> Judge:
    """A classifier folder, refusing a corrupt, foreign or mismatching one with a message naming the file.

    With ``dataset``, a classifier of another dataset is refused too.
    """
    folder = Path(folder)
    manifest = folder / "classifier.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"No classifier at {folder}: {manifest.name} is missing.")
    info = CLASSIFIER_FORMAT.read(manifest)
    if dataset is not None and info.get("dataset") != dataset:
        raise ValueError(f"{manifest} judges {info.get('dataset')!r} images, not {dataset!r}.")
    try:
        if info["input_size"] != INPUT_SIZE:
            raise ValueError(f"input size {info['input_size']}, this spiral's classifiers take {INPUT_SIZE}")
        classifier = Classifier(int(info["num_classes"]), int(info["channels"]), int(info["width"]),
                                int(info["features"]))
        test_accuracy = float(info["test_accuracy"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{manifest} does not describe a usable classifier: {error}") from error
    weights = folder / "classifier.pt"
    try:
        classifier.load_state_dict(load_weights(weights))
    except RuntimeError as error:  # names or shapes that do not match classifier.json
        raise ValueError(f"{weights} does not fit the network classifier.json describes: {error}") from error
    return Judge(classifier.eval(), str(info["dataset"]), test_accuracy, folder)


# --- metrics ----------------------------------------------------------------------------------------------


def confident_share(probabilities: np.ndarray, threshold: float = CONFIDENT) -> float:
    """The fraction of images whose most likely class has probability >= ``threshold``."""
    return float(np.mean(np.asarray(probabilities).max(axis=1) >= threshold))


def class_histogram(probabilities: np.ndarray) -> np.ndarray:
    """How many images fall in each class (their most likely one): int counts, one per class."""
    probabilities = np.asarray(probabilities)
    return np.bincount(probabilities.argmax(axis=1), minlength=probabilities.shape[1])


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two sets of features (N, D), N >= 2 each."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"A Fréchet distance needs at least 2 images a side, not {len(a)} and {len(b)}.")
    return gaussian_frechet_distance(a.mean(axis=0), np.cov(a, rowvar=False), b.mean(axis=0), np.cov(b, rowvar=False))


def gaussian_frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    Tr (S_a S_b)^(1/2) is the sum of the square roots of the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2), which has the same eigenvalues; symmetric eigensolvers stay real
    and exact where a general matrix square root of a rank-deficient product (fewer images
    than features) goes complex. Rounding can make tiny eigenvalues negative: they are zeros.
    """
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    product = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.linalg.eigvalsh((product + product.T) / 2).clip(min=0)).sum()
    difference = np.asarray(mean_a) - np.asarray(mean_b)
    return max(0.0, float(difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root))


@dataclass(frozen=True)
class SampleStats:
    """What the judge says about one set of images."""

    count: int
    confident_share: float
    histogram: tuple[int, ...]
    frechet_distance: float  # to the reference half of the real images

    @property
    def classes_covered(self) -> int:
        return sum(count > 0 for count in self.histogram)


@dataclass(frozen=True)
class SampleReport:
    """Generated samples next to as many real images, both against the other half of them: the test split's,
    or for a validation the training split's (``split``)."""

    generated: SampleStats
    real: SampleStats
    reference_size: int
    threshold: float = CONFIDENT
    split: str = "test"
    paintings_per_sample: float = 1.0  # more than 1 where a class-mix correction redrew some (spiral.class_mix)

    def markdown(self) -> str:
        """Two Markdown tables: the metrics, then the class histogram."""
        classes = len(self.generated.histogram)
        rows = [("images", lambda s: str(s.count)),
                (f"confident (p ≥ {self.threshold:g})", lambda s: f"{s.confident_share:.1%}"),
                ("classes covered", lambda s: f"{s.classes_covered} / {classes}"),
                (f"Fréchet distance to {self.reference_size} real {self.split} images",
                 lambda s: f"{s.frechet_distance:.2f}")]
        if self.paintings_per_sample != 1:
            rows.append(("paintings per sample (the class-mix correction's redraws)",
                         lambda s: f"{self.paintings_per_sample:.2f}" if s is self.generated else ""))
        lines = [f"| | generated | real ({'held-out' if self.split == 'test' else self.split}) |", "|---|---|---|"]
        lines += [f"| {name} | {value(self.generated)} | {value(self.real)} |" for name, value in rows]
        lines += ["", "| class | " + " | ".join(map(str, range(classes))) + " |", "|---" * (classes + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(map(str, stats.histogram)) + " |"
                  for name, stats in (("generated", self.generated), ("real", self.real))]
        return "\n".join(lines)


# `spiral eval --validation` judges a generator against the training split's last images, as many as MNIST's test
# split: a generator learns from the training split's distribution, not from chosen images, so they measure it
# as the test split does, and choosing on them leaves the test split alone.
GENERATOR_VALIDATION_IMAGES = 10_000


def evaluate_samples(classifier: Classifier, samples: np.ndarray, real: np.ndarray,
                     threshold: float = CONFIDENT, split: str = "test") -> SampleReport:
    """Judge uint8 (N, H, W, C) samples against real images of ``split`` (any size, white on black like the data).

    The real images are split in halves: the samples and the first ``len(samples)`` images of
    the first half are both compared with the second half, so the two Fréchet distances are
    measured at the same sample size against the same images, and the real one is the floor.
    """
    if len(real) < 4:
        raise ValueError(f"Judging samples needs at least 4 real images, not {len(real)}.")
    half = len(real) // 2
    _, reference = predict(classifier, real[half:])

    def stats(images: np.ndarray) -> SampleStats:
        probabilities, features = predict(classifier, images)
        return SampleStats(len(images), confident_share(probabilities, threshold),
                           tuple(int(c) for c in class_histogram(probabilities)), frechet_distance(features, reference))

    return SampleReport(stats(samples), stats(real[:min(half, len(samples))]), len(real) - half, threshold, split)


def evaluate_generator(agent: Agent, classifier: Classifier, real_images: np.ndarray, samples: int,
                       greedy: bool = False, temperature: float | None = None, first_seed: int = 0,
                       split: str = "test", first_stroke_temperature: float | None = None) -> SampleReport:
    """Paint ``samples`` images with the agent (seeds ``first_seed`` on, at ``temperature`` and
    ``first_stroke_temperature``, by default the agent's own) and judge them against ``real_images`` of ``split``.

    An agent trained with ``data.invert`` paints black on white; its canvases are flipped back
    to the classifier's white on black, so pass the real images as the dataset has them.
    """
    seeds = range(first_seed, first_seed + samples)
    with tqdm(total=samples, desc="painting samples") as bar:
        canvases, paintings = [], 0
        for start in range(0, samples, PAINT_BATCH):
            batch = agent.paint_all(seeds=seeds[start:start + PAINT_BATCH], greedy=greedy, temperature=temperature,
                                    first_stroke_temperature=first_stroke_temperature)
            canvases += [episode.canvas for episode in batch]
            paintings += sum(episode.draws for episode in batch)
            bar.update(len(batch))
    canvases = np.stack(canvases)
    if agent.manifest.data.invert:
        canvases = 255 - canvases
    report = evaluate_samples(classifier, canvases, real_images, split=split)
    return replace(report, paintings_per_sample=paintings / samples)
