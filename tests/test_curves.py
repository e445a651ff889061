"""``spiral curves``: training curves read from real TensorBoard event files and plotted to PNG."""

import numpy as np
import pytest
from PIL import Image
from tensorboardX import SummaryWriter

from spiral.cli import main
from spiral.curves import (TITLES, Series, blank_lines, copy_scalars, default_tags, draw_curves, event_files,
                           plot_curves, read_scalars, run_name)

START = 1_000_000.0  # wall times are START + step (+ an hour after the resume): the first is step 100's


def write_scalars(folder, suffix, scalars):
    """One event file, as one trainer session writes it: ``{tag: [(step, wall, value), ...]}``."""
    writer = SummaryWriter(str(folder), filename_suffix=suffix)
    for tag, points in scalars.items():
        for step, wall, value in points:
            writer.add_scalar(tag, value, step, walltime=wall)
    writer.close()


@pytest.fixture
def resumed_run(tmp_path):
    """A run stopped after step 500 and resumed from its checkpoint at step 300.

    The resumed session logs steps 400 and 500 again, with other values, in a second file; its
    suffix sorts first by name, so only the events' times say which file came later.
    """
    run = tmp_path / "mnist-recon-20260101-000000"
    first = {
        "eval/test_l2": [(step, START + step, 0.5 - step / 2048) for step in (100, 300, 500)],
        "policy/entropy_flag": [(step, START + step, step / 1024) for step in (100, 200, 300, 400, 500)],
        "env/final_l2": [(100, START + 100, 0.375)],  # only before the resume
    }
    resumed = {  # an hour later
        "eval/test_l2": [(step, START + 3600 + step, 0.25 - step / 4096) for step in (500, 700)],
        "policy/entropy_flag": [(step, START + 3600 + step, -step / 1024) for step in (400, 500, 600, 700)],
        "discriminator/wasserstein": [(step, START + 3600 + step, step / 64) for step in (400, 700)],
        "policy/reward_mean": [(700, START + 4300, 0.125)],
    }
    write_scalars(run / "tb", ".b-first", first)
    write_scalars(run / "tb", ".a-resumed", resumed)
    return run


def test_read_scalars_merges_a_resumed_run_in_step_order_with_the_later_values(resumed_run):
    scalars = read_scalars(resumed_run)
    assert sorted(scalars) == ["discriminator/wasserstein", "env/final_l2", "eval/test_l2",
                               "policy/entropy_flag", "policy/reward_mean"]
    entropy = scalars["policy/entropy_flag"]
    assert entropy.steps.tolist() == [100, 200, 300, 400, 500, 600, 700]
    assert entropy.values.tolist() == [100 / 1024, 200 / 1024, 300 / 1024, -400 / 1024, -500 / 1024,
                                       -600 / 1024, -700 / 1024]
    # Seconds since the run's first scalar (step 100's), the hour between the sessions included.
    assert entropy.wall.tolist() == [0, 100, 200, 3600 + 300, 3600 + 400, 3600 + 500, 3600 + 600]
    l2 = scalars["eval/test_l2"]
    assert l2.steps.tolist() == [100, 300, 500, 700]
    assert l2.values.tolist() == [0.5 - 100 / 2048, 0.5 - 300 / 2048, 0.25 - 500 / 4096, 0.25 - 700 / 4096]
    assert scalars["env/final_l2"].values.tolist() == [0.375]
    assert scalars["env/final_l2"].wall.tolist() == [0.0]


def test_the_default_curves_are_those_the_runs_logged(resumed_run):
    assert default_tags(set(read_scalars(resumed_run))) == [
        "eval/test_l2", "discriminator/wasserstein", "policy/reward_mean", "policy/entropy_flag"]
    # The non-saturating loss logs the scores, not their gap; an unconditional run has no test L2.
    assert default_tags({"discriminator/d_real", "discriminator/d_fake", "env/episode_return_mean",
                         "policy/entropy_end", "policy/entropy_flag", "policy/total_loss"}) == [
        "discriminator/d_fake", "discriminator/d_real", "env/episode_return_mean",
        "policy/entropy_end", "policy/entropy_flag"]
    # A cloning run: how well it predicts held-out programs beside the ones it learns from.
    assert default_tags({"pretrain/held_out_nll", "pretrain/held_out_nll_end", "pretrain/train_nll",
                         "pretrain/train_nll_end", "pretrain/lr"}) == ["pretrain/held_out_nll", "pretrain/train_nll"]


def test_the_cli_plots_two_runs_over_steps_and_wall_time(resumed_run, tmp_path, capsys):
    other = tmp_path / "other"
    write_scalars(other / "tb", "", {"eval/test_l2": [(step, START + step, 0.3) for step in (200, 400)]})
    out = tmp_path / "plots" / "curves.png"
    main(["curves", str(resumed_run), str(other), "--out", str(out), "--both", "--label", "recon",
          "--label", "other", "--blank", "0.089", "--smooth", "0.6"])
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (960, 1280)  # four curves, one row each: steps | wall time
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    for color in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # both runs' lines were drawn
        assert (np.abs(pixels - color).sum(axis=1) < 30).sum() > 100


def test_one_axis_lays_the_curves_out_up_to_three_wide(resumed_run, tmp_path):
    assert run_name(resumed_run / "tb") == resumed_run.name  # a run's tb folder stands for the run
    out = plot_curves([resumed_run / "tb"], tmp_path / "wall.png", tags=["eval/test_l2", "env/final_l2"], x="wall")
    with Image.open(out) as image:
        assert image.size == (960, 320)


def test_every_title_fits_in_a_one_panel_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    points = Series(np.arange(3), np.arange(3.0), np.ones(3))
    for tag in TITLES:
        figure = draw_curves({"run": {tag: points}}, tags=[tag], x="wall")
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        box = figure.axes[0].title.get_window_extent(canvas.get_renderer())
        assert 0 <= box.x0 and box.x1 <= figure.bbox.x1, f"the title of {tag} is cut off"


def test_an_unknown_tag_is_refused_with_the_tags_there_are(resumed_run, tmp_path):
    with pytest.raises(SystemExit) as error:
        main(["curves", str(resumed_run), "--out", str(tmp_path / "c.png"), "--tags", "eval/test_l2,eval/nope"])
    message = str(error.value)
    assert error.value.code == 2 and message.startswith("spiral curves: error:") and "eval/nope" in message
    assert "available: discriminator/wasserstein, env/final_l2, eval/test_l2" in message
    assert not (tmp_path / "c.png").exists()


def test_a_folder_without_logs_is_named_in_the_error(tmp_path):
    run = tmp_path / "not-a-run"
    (run / "tb").mkdir(parents=True)
    (run / "experiment.json").write_text("{}")
    with pytest.raises(SystemExit) as error:
        main(["curves", str(run), "--out", str(tmp_path / "c.png")])
    assert error.value.code == 2
    assert str(error.value) == f"spiral curves: error: {run} has no TensorBoard logs " \
                                    f"(no events.out.tfevents.* in {run / 'tb'})."


@pytest.mark.parametrize("argv, problem", [
    (["--smooth", "1"], "smoothing must be in [0, 1)"),
    (["--label", "a", "--label", "b"], "2 --label for 1 runs"),
])
def test_bad_options_are_refused(resumed_run, tmp_path, argv, problem):
    with pytest.raises(SystemExit) as error:
        main(["curves", str(resumed_run), "--out", str(tmp_path / "c.png"), *argv])
    assert problem in str(error.value)


def test_the_blank_canvas_line_comes_from_the_runs_own_logs(tmp_path):
    for name, blank in (("a", 0.089), ("b", 0.089), ("c", 0.1)):
        write_scalars(tmp_path / name / "tb", "", {"eval/blank_l2": [(10, START, 0.5), (20, START + 1, blank)],
                                                   "eval/test_l2": [(20, START + 1, 0.2)]})
    same = {label: read_scalars(tmp_path / label) for label in ("a", "b")}
    assert blank_lines(same) == {"blank canvas": pytest.approx(0.089)}
    both = {label: read_scalars(tmp_path / label) for label in ("a", "c")}
    assert blank_lines(both) == {"blank canvas, a": pytest.approx(0.089), "blank canvas, c": pytest.approx(0.1)}
    assert blank_lines({"none": {}}) == {}


def test_the_step_axis_says_adam_steps_for_a_pretraining_run_and_both_where_runs_mix(resumed_run, tmp_path):
    write_scalars(tmp_path / "bc" / "tb", "", {"pretrain/held_out_nll": [(50, START, 6.0), (100, START + 1, 5.5)],
                                               "eval/test_l2": [(100, START + 1, 0.05)]})
    data = {"rl": read_scalars(resumed_run), "bc": read_scalars(tmp_path / "bc")}
    figure = draw_curves(data, ["eval/test_l2", "pretrain/held_out_nll", "policy/entropy_flag"])
    assert [ax.get_xlabel() for ax in figure.axes] == ["env steps; Adam steps for pretraining runs",
                                                       "Adam steps (pretraining)", "env steps"]
    assert draw_curves(data, ["eval/test_l2"], x="wall").axes[0].get_xlabel() == "wall-clock hours"


def test_copying_the_scalars_keeps_every_point_and_drops_the_rest(resumed_run, tmp_path):
    writer = SummaryWriter(str(resumed_run / "tb"), filename_suffix=".images")
    writer.add_image("paintings", np.zeros((3, 64, 64), np.uint8), 700)
    writer.close()
    copy = copy_scalars(resumed_run, tmp_path / "copy" / "tb")
    original, copied = read_scalars(resumed_run), read_scalars(copy)
    assert copied.keys() == original.keys()
    for tag in original:
        assert np.array_equal(copied[tag].steps, original[tag].steps)
        assert np.allclose(copied[tag].wall, original[tag].wall) and np.allclose(copied[tag].values, original[tag].values)
    assert len(event_files(copy)) == 1


def test_copying_some_tags_keeps_only_those_and_names_a_missing_one(resumed_run, tmp_path):
    original = read_scalars(resumed_run)
    kept = sorted(original)[:1]
    copied = read_scalars(copy_scalars(resumed_run, tmp_path / "some", tags=kept))
    assert sorted(copied) == kept and np.array_equal(copied[kept[0]].values, original[kept[0]].values)
    with pytest.raises(ValueError, match="has no scalars \\['eval/nothing'\\]"):
        copy_scalars(resumed_run, tmp_path / "missing", tags=["eval/nothing"])
    assert not (tmp_path / "missing").exists()
