"""The judge of unconditional agents: metrics on cases whose answer is known, the shipped classifier's accuracy."""

import json
import re

import numpy as np
import pytest
import torch

from spiral.agent import load_agent, set_temperature
from spiral.classifier import (CLASSIFIER_FORMAT, DEFAULT_DIR, GENERATOR_VALIDATION_IMAGES, Classifier, accuracy,
                               class_histogram, confident_share, evaluate_generator, evaluate_samples,
                               frechet_distance, gaussian_frechet_distance, load_classifier, save_classifier,
                               train_classifier)
from spiral.cli import main
from spiral.datasets import load_dataset
from tests.conftest import EXPLOIT_MARKER, damaged_folders, export_untrained

torch.set_num_threads(1)


def exact_samples(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points whose sample mean and covariance (ddof 1) are exactly ``mean`` and ``cov``."""
    x = np.random.default_rng(seed).normal(size=(n, len(mean)))
    x -= x.mean(axis=0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # covariance: the identity
    return x @ np.linalg.cholesky(cov).T + mean


def test_a_set_is_at_distance_zero_from_itself():
    features = np.random.default_rng(0).normal(size=(300, 16))
    assert frechet_distance(features, features) == pytest.approx(0, abs=1e-8)


def test_the_distance_between_known_gaussians_is_the_closed_form():
    rng = np.random.default_rng(1)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
    # Diagonal covariances: Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) = sum (sqrt(a) - sqrt(b))^2.
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    # The distance does not change when both are rotated alike, which makes the covariances full.
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    cov_a, cov_b = rotation @ np.diag(var_a) @ rotation.T, rotation @ np.diag(var_b) @ rotation.T
    a = exact_samples(rotation @ mean_a, cov_a, 50, seed=2)
    b = exact_samples(rotation @ mean_b, cov_b, 80, seed=3)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)


def test_the_distance_agrees_with_a_general_matrix_square_root():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5)), rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5)) + 1
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                - 2 * np.trace(sqrtm(cov_a @ cov_b)).real)
    assert gaussian_frechet_distance(a.mean(0), cov_a, b.mean(0), cov_b) == pytest.approx(expected, rel=1e-6)


def test_fewer_images_than_features_still_give_a_finite_distance():
    rng = np.random.default_rng(5)
    distance = frechet_distance(rng.normal(size=(5, 64)), rng.normal(size=(500, 64)))
    assert np.isfinite(distance) and distance > 0
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_distance(rng.normal(size=(1, 64)), rng.normal(size=(500, 64)))


def test_confident_share_and_class_histogram_on_hand_made_probabilities():
    probabilities = np.array([[0.95, 0.05, 0.0], [0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.0, 0.01, 0.99]])
    assert confident_share(probabilities) == 0.75  # p >= 0.9 counts, 0.5 does not
    assert confident_share(probabilities, threshold=0.99) == 0.25
    assert class_histogram(probabilities).tolist() == [2, 0, 2]
    assert class_histogram(np.eye(4)[[1, 1]]).tolist() == [0, 2, 0, 0]  # classes nobody chose still count, as 0


@pytest.fixture(scope="module")
def shipped():
    return load_classifier(DEFAULT_DIR / "mnist", "mnist")


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist", 64, limit=2000).test  # the canvas size of mnist-gen: the judge resizes


def test_the_shipped_mnist_classifier_is_accurate_on_held_out_digits(shipped):
    data = load_dataset("mnist", 32, limit=2000)
    measured = accuracy(shipped.classifier, data.test, data.labels_test)
    assert measured >= 0.97
    assert measured == pytest.approx(shipped.test_accuracy, abs=0.01)  # the manifest tells the truth
    assert shipped.test_accuracy >= 0.98  # on the whole test split, when it was trained


def test_the_shipped_classifier_reads_digits_at_the_canvas_size(shipped):
    data = load_dataset("mnist", 64, limit=1000)
    assert accuracy(shipped.classifier, data.test, data.labels_test) >= 0.97


def test_a_brief_training_beats_chance_by_far():
    classifier, test_accuracy = train_classifier("mnist", epochs=2, limit=2000, progress=False)
    assert test_accuracy > 0.7  # chance: 0.1


@pytest.mark.parametrize(("dataset", "message"), [("glyphs", "never seen in training"), ("lfw", "no class labels"),
                                                  ("photos", "test photos are never in training"),
                                                  ("folder:/tmp", "no class labels")])
def test_datasets_a_classifier_cannot_judge_are_refused_with_the_reason(dataset, message):
    with pytest.raises(ValueError, match=message):
        train_classifier(dataset)


def test_real_digits_score_like_real_digits_and_blank_canvases_do_not(shipped, mnist_test):
    real = evaluate_samples(shipped.classifier, mnist_test[:200], mnist_test)
    assert real.generated.count == real.real.count == 200 and real.reference_size == 1000
    assert real.generated == real.real  # the same images as the real reference
    assert real.generated.confident_share > 0.9 and real.generated.classes_covered == 10
    blank = evaluate_samples(shipped.classifier, np.zeros((50, 64, 64, 3), np.uint8), mnist_test)
    assert blank.generated.classes_covered == 1 and blank.real.count == 50
    assert blank.generated.frechet_distance > 10 * blank.real.frechet_distance
    table = blank.markdown()
    assert "| classes covered | 1 / 10 | " in table and "| class | 0 | 1 |" in table


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    return save_classifier(tmp_path / "judge", Classifier(10).eval(), "mnist", 0.5)


def test_a_saved_classifier_loads_back_the_same(saved, mnist_test):
    loaded = load_classifier(saved)
    torch.manual_seed(0)
    original = Classifier(10).eval()
    images = torch.rand(4, 1, 64, 64)
    assert torch.equal(loaded.classifier(images), original(images))
    assert (loaded.dataset, loaded.test_accuracy) == ("mnist", 0.5)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["judge"]  # no staging leftovers


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "classifier.json").write_text('{"format": "spiral-agent", "version": 1}'),
         "Not a spiral classifier manifest: .*classifier.json has format 'spiral-agent'"),
        (lambda folder: (folder / "classifier.json").write_text('{"format": "spiral-classifier", "version": 1}'),
         "does not describe a usable classifier"),
        *damaged_folders(CLASSIFIER_FORMAT, "classifier.json", "classifier.pt", "head.weight"),
    ],
)
def test_corrupt_or_foreign_classifiers_are_refused_with_a_reason(saved, damage, message):
    damage(saved)
    with pytest.raises(ValueError, match=message):
        load_classifier(saved)
    assert not (saved.parent / EXPLOIT_MARKER).exists()  # a pickle that runs code is never executed


def test_a_classifier_of_another_dataset_or_none_at_all_is_refused(saved, tmp_path):
    with pytest.raises(ValueError, match="judges 'mnist' images, not 'fashion-mnist'"):
        load_classifier(saved, "fashion-mnist")
    manifest = json.loads((saved / "classifier.json").read_text())
    (saved / "classifier.json").write_text(json.dumps(manifest | {"num_classes": 26}))
    with pytest.raises(ValueError, match="does not fit"):
        load_classifier(saved)
    with pytest.raises(FileNotFoundError, match="classifier.json is missing"):
        load_classifier(tmp_path / "nothing")


@pytest.fixture
def generator_agent(tmp_path):
    return export_untrained(tmp_path / "agent", "mnist-gen")


def test_spiral_eval_judges_an_unconditional_agent(generator_agent, shipped, capsys):
    main(["eval", "--agent", str(generator_agent), "--samples", "4"])
    out = capsys.readouterr().out
    assert f"test accuracy {shipped.test_accuracy:.2%}" in out
    assert "| images | 4 | 4 |" in out  # the samples, and as many real digits
    assert "| confident (p ≥ 0.9) |" in out and "| classes covered |" in out
    assert "| Fréchet distance to 5000 real test images |" in out  # the other half of the 10,000
    assert "| generated |" in out and "| real |" in out


def test_spiral_eval_validates_on_other_seeds_against_training_digits(generator_agent, shipped, capsys):
    main(["eval", "--agent", str(generator_agent), "--samples", "4", "--validation"])
    out = capsys.readouterr().out
    assert "4 samples (seeds 4 to 7) against 10000 training images of mnist" in out
    assert "| Fréchet distance to 5000 real training images |" in out and "| real (training) |" in out
    agent = load_agent(generator_agent)
    tail = load_dataset("mnist", 64).train[-GENERATOR_VALIDATION_IMAGES:]
    report = evaluate_generator(agent, shipped.classifier, tail, samples=4, first_seed=4, split="training")
    shares = report.generated.confident_share, report.real.confident_share
    assert "| confident (p ≥ 0.9) | {:.1%} | {:.1%} |".format(*shares) in out
    first_seeds = evaluate_generator(agent, shipped.classifier, tail, samples=4)  # seeds 0 to 3: other paintings
    assert first_seeds.generated.frechet_distance != report.generated.frechet_distance


def test_spiral_eval_validates_on_a_second_seed_set_and_refuses_it_where_it_means_nothing(generator_agent, shipped,
                                                                                           capsys):
    main(["eval", "--agent", str(generator_agent), "--samples", "4", "--validation", "--seed-set", "2"])
    assert "4 samples (seeds 8 to 11) against 10000 training images of mnist" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--seed-set .* needs --validation"):
        main(["eval", "--agent", str(generator_agent), "--samples", "4", "--seed-set", "2"])
    with pytest.raises(SystemExit):  # set 0 would be the test's seeds
        main(["eval", "--agent", str(generator_agent), "--samples", "4", "--validation", "--seed-set", "0"])
    assert "--seed-set: must be > 0" in capsys.readouterr().err


def test_spiral_eval_samples_at_the_agents_own_temperature_and_says_so(generator_agent, shipped, capsys):
    set_temperature(generator_agent, 0.7)
    main(["eval", "--agent", str(generator_agent), "--samples", "4"])
    out = capsys.readouterr().out
    assert "4 samples (seeds 0 to 3, temperature 0.7 (the agent's own)) against" in out
    agent = load_agent(generator_agent)
    test = load_dataset("mnist", 64).test
    own, named = (evaluate_generator(agent, shipped.classifier, test, samples=4, temperature=temperature)
                  for temperature in (None, 0.7))
    assert own.generated.frechet_distance == named.generated.frechet_distance
    assert f"| confident (p ≥ 0.9) | {own.generated.confident_share:.1%} |" in out
    main(["eval", "--agent", str(generator_agent), "--samples", "4", "--temperature", "1"])
    assert "4 samples (seeds 0 to 3) against" in capsys.readouterr().out  # told otherwise: at 1


def test_spiral_eval_refuses_proposals_and_refining_for_a_generator(generator_agent):
    for option in ("--proposals", "--refine"):
        with pytest.raises(SystemExit, match="Proposals and refining are checked against a target: an agent that "
                                             "paints from scratch"):
            main(["eval", "--agent", str(generator_agent), "--samples", "4", option, "2"])


def test_spiral_eval_refuses_the_counts_of_a_reconstruction_agent_for_a_generator(generator_agent):
    with pytest.raises(SystemExit, match="paints from scratch .*--images and --bank are for the other kind"):
        main(["eval", "--agent", str(generator_agent), "--images", "5", "--bank", "0"])


def test_spiral_eval_says_how_to_make_a_missing_classifier(generator_agent, tmp_path):
    with pytest.raises(SystemExit, match=re.escape(f"spiral classifier --dataset mnist --out {tmp_path / 'none'}")):
        main(["eval", "--agent", str(generator_agent), "--samples", "4", "--classifier", str(tmp_path / "none")])
