"""Paint a generator's classes as often as its data has them (``spiral class-mix``).

A generator sampled below temperature 1 paints the classes it is surest of more often than its data has
them: the shipped digit generator painted 13% nines and 6.6% fours where the digits have 10% of each. The
judge's Fréchet distance counts a wrong mix as much as a wrong shape: weighting the samples by class to
the data's mix took the distance on validation from 9.5-10.1 to 8.0-8.9 (docs/RESULTS.md, ``mnist-pen-gen``).

The correction is rejection sampling over classes. A classifier of the generator's own, trained on the
programs it was cloned on (painted with its pen, each labelled with the digit it paints; not the project's
judge, which measures the samples), names each sample's class ``c``. The generator's own mix ``q`` is
measured on samples of seeds no evaluation uses, the data's ``p`` on the programs' labels, and a sample of
class ``c`` is kept with probability ``accept[c] = (p[c] / q[c]) / max_k p[k] / q[k]``; the kept samples
then have the data's mix, as far as the classifier is right. A rejected sample is painted again from a
seed derived from its own, up to ``tries`` paintings (the last is kept), and the draws are seeded too: a
seed still names one painting. ``Agent.paint_all`` applies the correction of an agent whose ``agent.json``
names one (``AgentManifest.class_mix``); ``train_class_mix`` makes one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from spiral.agent import PAINT_BATCH
from spiral.classifier import Classifier, accuracy, fit_classifier, predict
from spiral.manifest import ClassMix

if TYPE_CHECKING:
    from spiral.agent import Agent
    from spiral.programs import ProgramsFile

# The samples whose mix is measured: seeds far from those any evaluation or the app draws (0 on).
MIX_FIRST_SEED = 10**15
HELD_OUT = 0.1  # of the programs, kept out of the classifier's training to measure it
MIN_PROGRAMS = 8  # two held out, six to train on: a smoke test's size, not a useful classifier's


@dataclass(frozen=True)
class MixSettings:
    """How a correction is made: a classifier trained ``epochs`` passes over the programs, the generator's mix
    measured on ``samples`` of its paintings, up to ``tries`` paintings a sample."""

    samples: int = 3_000
    epochs: int = 3
    tries: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("samples", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
        ClassMix((1.0, 1.0), self.tries)  # its own check of tries


@dataclass(frozen=True)
class TrainedMix:
    """A trained correction: the classifier's weights, what ``agent.json`` records, and what it measured."""

    state: dict[str, torch.Tensor]
    class_mix: ClassMix
    held_out_accuracy: float  # the classifier on held-out programs
    data_mix: np.ndarray  # the programs' classes, shares summing to 1
    own_mix: np.ndarray  # the generator's, as the classifier sees them
    mean_draws: float  # the paintings a sample costs on average, were the classifier the truth


def mix_classifier(classes: int) -> Classifier:
    """The classifier network a correction of ``classes`` classes keeps in ``mix_classifier.pt``."""
    return Classifier(classes)


def redraw_seed(seed: int, attempt: int) -> int:
    """The seed of a sample's ``attempt``-th painting: its own seed first, then seeds derived from it (below 2**63,
    torch's bound) that no other seed's first painting is likely to use."""
    if attempt == 0:
        return seed
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def kept(classifier: Classifier, class_mix: ClassMix, canvases: np.ndarray, seeds: list[int], attempt: int
         ) -> np.ndarray:
    """Which of these paintings (of ``seeds``' ``attempt``-th draws) the correction keeps: a seeded coin each,
    weighted by ``accept`` of the class the classifier names."""
    classes = predict(classifier, canvases)[0].argmax(axis=1)
    coins = np.array([np.random.default_rng([seed, attempt, 1]).random() for seed in seeds])
    return coins < np.asarray(class_mix.accept)[classes]


def train_class_mix(agent: Agent, programs: ProgramsFile, settings: MixSettings = MixSettings(),
                    progress: bool = True) -> TrainedMix:
    """A correction for ``agent``, a generator, from ``programs``, the programs file it was cloned on, re-painted
    with the agent's brush and labelled by its dataset."""
    if agent.conditional:
        raise ValueError("A class-mix correction redraws a generator's samples; this agent reconstructs targets.")
    if agent.manifest.class_mix is not None:
        raise ValueError("This agent corrects its class mix already: make the correction for the generator it was "
                         "made from.")
    config = agent.paint_config
    if tuple(programs.config.canvas_size) != tuple(config.canvas_size):
        raise ValueError(f"{programs.path} paints {programs.config.canvas_size[0]}x{programs.config.canvas_size[1]} "
                         f"canvases and the agent {config.canvas_size[0]}x{config.canvas_size[1]}.")
    if len(programs.records) < MIN_PROGRAMS:
        raise ValueError(f"{programs.path} has {len(programs.records)} programs: a classifier needs {MIN_PROGRAMS} at "
                         f"least (the shipped generator's had 20,000).")
    labels, classes = programs.labels()
    images = np.stack([replace(record.program, brush=config.brush, background=config.background).render()
                       for record in tqdm(programs.records, desc="painting the programs", disable=not progress)])
    held = max(2, int(len(images) * HELD_OUT))
    classifier = fit_classifier(images[held:], labels[held:], classes, settings.epochs, settings.seed, progress,
                                desc="training the mix classifier")
    held_out_accuracy = accuracy(classifier, images[:held], labels[:held])

    seeds = range(MIX_FIRST_SEED, MIX_FIRST_SEED + settings.samples)
    samples = []
    with tqdm(total=settings.samples, desc="painting samples", disable=not progress) as bar:
        for start in range(0, settings.samples, PAINT_BATCH):
            samples += [episode.canvas for episode in agent.paint_all(seeds=seeds[start:start + PAINT_BATCH])]
            bar.update(len(seeds[start:start + PAINT_BATCH]))
    counts = np.bincount(predict(classifier, np.stack(samples))[0].argmax(axis=1), minlength=classes)
    own_mix = (counts + 1) / (counts.sum() + classes)  # one count added: a class never painted still gets a share
    data_mix = np.bincount(labels, minlength=classes) / len(labels)
    ratio = data_mix / own_mix
    accept = ratio / ratio.max()
    kept_share = float((own_mix * accept).sum())  # of a sample's paintings, on average
    mean_draws = float(sum((1 - kept_share) ** attempt for attempt in range(settings.tries)))
    class_mix = ClassMix(tuple(float(max(value, 1e-6)) for value in accept), settings.tries)
    return TrainedMix({key: value.detach().clone() for key, value in classifier.state_dict().items()}, class_mix,
                      held_out_accuracy, data_mix, own_mix, mean_draws)
