"""train_det.py end to end on tiny synthetic data: exact resume, refused settings, the
labeled set apart from the SSL pool, two processes, the schedule of repeat-factor epochs."""

import json
import math
import re
import shlex
import shutil

import numpy as np
import pytest
import torch
from conftest import prepared_synthetic, tiny_detector_args, torchrun, trunk_file
from PIL import Image

import train_det
from cxr.data.classes import VINBIGDATA_CLASSES
from cxr.data.image_lists import read_image_list
from cxr.data.splits import partition
from cxr.detection.detector import build_detector
from cxr.detection.samplers import RepeatFactorSampler
from cxr.run import layout
from cxr.run.errors import UserError
from cxr.run.outputs import make_folder
from cxr.run.provenance import keys_of, model_record, trained_on_entry


def test_the_architecture_of_an_init_file_is_read_from_its_tensors(tmp_path):
    path, _ = trunk_file(tmp_path)
    assert train_det.default_arch(str(path), {}, fallback="resnet50") == "resnet18"
    assert train_det.default_arch("random", {}, fallback="resnet50") == "resnet50"
    assert train_det.default_arch("ssl", {"arch": "resnet34"}, fallback="resnet18") == "resnet34"
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(
        UserError, match="notes.txt: it is not a PyTorch file .*expected ResNet weights"
    ):
        train_det.default_arch(str(tmp_path / "notes.txt"), {}, fallback="resnet50")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepared_synthetic(tmp_path_factory.mktemp("det"), num_images=60, seed=21)


def det_args(data_dir, out, name, *extra):
    return [*tiny_detector_args(data_dir, out, name), *extra]


@pytest.mark.slow
def test_resumed_detector_run_equals_uninterrupted(data_dir, tmp_path):
    train_det.main(det_args(data_dir, tmp_path, "straight", "--repeat-rounding", "ceil"))
    train_det.main(
        det_args(data_dir, tmp_path, "resumed", "--repeat-rounding", "ceil", "--stop-after", "1")
    )
    assert not (tmp_path / "resumed" / "fasterrcnn_final.pth").exists()
    train_det.main(det_args(data_dir, tmp_path, "resumed", "--repeat-rounding", "ceil", "--resume"))
    straight = torch.load(tmp_path / "straight" / "fasterrcnn_final.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "fasterrcnn_final.pth", weights_only=True)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    meta = json.loads((tmp_path / "straight" / "fasterrcnn_final.json").read_text())
    history = json.loads((tmp_path / "straight" / "eval_history.json").read_text())
    assert meta["num_classes"] == 15 and [h["epoch"] for h in history] == [1, 2]
    assert history == json.loads((tmp_path / "resumed" / "eval_history.json").read_text())
    assert 0.0 <= history[-1]["AP50"] <= 1.0 and len(history[-1]["per_class"]) == 14
    model = build_detector(arch="resnet18", image_size=64, num_classes=len(VINBIGDATA_CLASSES))
    model.load_state_dict(straight)  # the file is exactly a FasterRCNN state dict
    records = [
        json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()
    ]
    scheduled = next(r["scheduled_steps"] for r in records if r["event"] == "data")
    assert (
        torch.load(tmp_path / "straight" / "checkpoint.pth", weights_only=True)["step"] == scheduled
    )


@pytest.fixture(scope="module")
def one_epoch_run(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("one-epoch")
    train_det.main(det_args(data_dir, root, "run", "--stop-after", "1", "--eval-every", "0"))
    return root  # a run stopped after one of its two epochs


@pytest.mark.slow
@pytest.mark.parametrize(
    "changed",
    [
        ("--lr-schedule", "cosine"),
        ("--lr-steps", "0.5,0.9"),
        ("--warmup-iters", "3"),
        ("--weight-decay", "0"),
        ("--no-augment",),
        ("--amp", "bf16"),
        ("--clip-grad", "1"),
        ("--warmup-factor", "0.5"),
        ("--norm", "bn"),
    ],
)
def test_resume_refuses_every_setting_that_changes_the_result(data_dir, one_epoch_run, changed):
    root = one_epoch_run
    header = (root / "run" / "args.json").read_text()
    key = changed[0].lstrip("-").replace("-", "_").replace("no_", "")
    with pytest.raises(
        UserError, match=f"--resume with different settings than the checkpoint: {key} "
    ):
        train_det.main(det_args(data_dir, root, "run", "--resume", *changed))
    assert (root / "run" / "args.json").read_text() == header  # refused before writing anything


def backbone_that_learnt(folder, images, *, data_dir, **meta):
    """A resnet18 backbone in `folder` whose record says its SSL pool held `images`
    ({name: path}); meta: more of its metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    path, _ = trunk_file(folder)
    names, keys = keys_of(images, what="the pool", log=None)
    record = [trained_on_entry("SSL pool", names, keys, data_dir=data_dir)]
    meta = {"arch": "resnet18", "image_size": 64, **meta, "trained_on": record}
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_a_backbone_that_learnt_a_test_image_is_refused_whatever_its_path_or_name(
    data_dir, tmp_path, capsys
):
    test_image = sorted((data_dir / "test").glob("*.png"))[1]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with Image.open(test_image) as image:
        image.save(downloads / "scan.jpg", quality=75)  # renamed and re-encoded
    path = backbone_that_learnt(downloads, {"scan": downloads / "scan.jpg"}, data_dir=data_dir)
    tests = len(list((data_dir / "test").glob("*.png")))
    refusal = (
        f"backbone .* learnt from 1 of the {tests} test images of .*{test_image.stem} \\(as scan\\)"
    )
    with pytest.raises(UserError, match=refusal):
        train_det.main(det_args(data_dir, tmp_path / "out", "a", "--init", str(path)))
    pretrain = tmp_path / "out" / "b" / layout.PRETRAIN
    pretrain.mkdir(parents=True)
    shutil.copy(path, pretrain / layout.BACKBONE)
    shutil.copy(path.with_suffix(".json"), pretrain / layout.BACKBONE_META)
    with pytest.raises(UserError, match=refusal):
        train_det.main(det_args(data_dir, tmp_path / "out", "b", "--init", "ssl"))
    capsys.readouterr()
    with pytest.raises(UserError, match=refusal):
        train_det.main(det_args(data_dir, tmp_path / "out", "b", "--init", "ssl", "--dry-run"))
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("learnt:")]
    assert listed == [f"learnt: {test_image.stem} (as scan) in its SSL pool"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b"]  # nothing written
    path.with_suffix(".json").unlink()  # a backbone from elsewhere: no record
    train_det.main(det_args(data_dir, tmp_path / "out", "a", "--init", str(path), "--dry-run", "1"))
    assert "keeps no record of the images it learnt from" in capsys.readouterr().out


def experiment_pretrained_on_half(data_dir, experiment):
    """({name: path} of the training images, the SSL pool's names) of an experiment whose
    backbone learnt from the first half of the SSL split's permutation."""
    train = {p.stem: p for p in (data_dir / "train").glob("*.png")}
    pool = partition(sorted(train), 0.5, seed=0).ssl
    pretrain = experiment / layout.PRETRAIN
    make_folder(pretrain)  # as train_ssl.py makes it: both folders marked as cxr's
    path = backbone_that_learnt(
        pretrain, {n: train[n] for n in pool}, data_dir=data_dir, ssl_fraction=0.5, split_seed=0
    )
    path.rename(pretrain / layout.BACKBONE)
    path.with_suffix(".json").rename(pretrain / layout.BACKBONE_META)
    return train, pool


def test_labeled_images_the_ssl_pool_held_are_refused_unless_allowed(data_dir, tmp_path, capsys):
    _, pool = experiment_pretrained_on_half(data_dir, tmp_path / "exp")
    with pytest.raises(UserError, match=r"labeled images .*Lower --labeled-fraction to at most "
                       r"0\.500, or pass --allow-overlap"):  # fmt: skip
        train_det.main(
            det_args(data_dir, tmp_path, "exp", "--init", "ssl", "--labeled-fraction", "0.8")
        )
    capsys.readouterr()
    argv = ["--init", "ssl", "--labeled-fraction", "0.8", "--dry-run", "1"]
    with pytest.raises(UserError, match=r"\(--dry-run lists each\)$") as refused:
        train_det.main(det_args(data_dir, tmp_path, "exp", *argv))
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("learnt:")]
    count = int(re.search(r"learnt from (\d+) of the", str(refused.value)).group(1))
    assert len(listed) == count > 3  # every one, where the message names three
    assert {line.split()[1] for line in listed} <= set(pool)
    assert all(line.endswith(" in its SSL pool") for line in listed)
    for allowed in ([], ["--labeled-fraction", "0.8", "--allow-overlap"]):
        argv = det_args(data_dir, tmp_path, "exp", "--init", "ssl", "--dry-run", "1", *allowed)
        train_det.main(argv)
        assert f"its SSL pool ({len(pool)} images): checked" in capsys.readouterr().out


@pytest.mark.slow
def test_the_detector_records_its_backbones_images_then_its_own(data_dir, tmp_path):
    train, pool = experiment_pretrained_on_half(data_dir, tmp_path / "exp")
    argv = ["--init", "ssl", "--epochs", "1", "--eval-every", "0"]
    train_det.main(det_args(data_dir, tmp_path, "exp", *argv))
    labeled = read_image_list(tmp_path / "exp" / layout.LABELED_IMAGES).names
    assert labeled and not set(labeled) & set(pool) and len(labeled) + len(pool) == len(train)
    meta = json.loads((tmp_path / "exp" / layout.DETECTOR).with_suffix(".json").read_text())
    record = model_record(meta)
    assert [(e.what, sorted(e.names)) for e in record] == [
        ("SSL pool", sorted(pool)),
        ("fine-tuning images", sorted(labeled)),
    ]
    _, own = keys_of({n: train[n] for n in record[1].names}, what="own", log=None)
    assert (record[1].keys - own).abs().max() < 4e-3  # the pictures, not only the names


def test_seed_project_command_line_parses_with_its_meaning(capsys):
    seed = (
        "--experiment-name simclr_60pct --labeled-dataset-percent 0.4 --epochs 100 --batch-size 8 "
        "--lr 0.01"
    )
    args = train_det.get_args_parser().parse_args(shlex.split(seed))
    assert (args.labeled_fraction, args.epochs, args.batch_size, args.lr, args.init) == (
        0.4,
        100,
        8,
        0.01,
        "ssl",
    )
    # The old name means the SSL share in train_ssl.py: typing it says what it is read as.
    assert "--labeled-dataset-percent 0.4 is read as --labeled-fraction 0.4" in (
        capsys.readouterr().err
    )
    train_det.get_args_parser().parse_args(["--labeled-fraction", "0.4"])
    assert capsys.readouterr().err == ""


def torchrun_det(data_dir, tmp_path, name, *extra):
    return torchrun(
        "train_det.py", *det_args(data_dir, tmp_path, name, "--batch-size", "2", *extra)
    )


@pytest.mark.slow
def test_torchrun_two_processes_train_evaluate_and_resume_exactly(data_dir, tmp_path):
    """Two gloo processes with global BatchNorm; stopped after epoch 1 and resumed,
    the run ends with the uninterrupted run's weights (each rank's randomness
    comes from (seed, epoch, rank) and the sampler's per-item seeds, not from a
    saved generator state)."""
    result = torchrun_det(data_dir, tmp_path, "ddp")
    history = json.loads((tmp_path / "ddp" / "eval_history.json").read_text())
    assert len(history) == 2 and history[-1]["AP"] is not None
    assert json.loads((tmp_path / "ddp" / "args.json").read_text())["world_size"] == 2
    assert "norm syncbn" in result.stdout
    torchrun_det(data_dir, tmp_path, "resumed", "--stop-after", "1")
    torchrun_det(data_dir, tmp_path, "resumed", "--resume")
    straight = torch.load(tmp_path / "ddp" / "fasterrcnn_final.pth", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "fasterrcnn_final.pth", weights_only=True)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_schedule_spans_every_step_of_the_repeat_factor_epochs():
    """With ceil rounding an epoch holds sum(ceil(r)) items, with stochastic a
    random count: the schedule has one rate per step actually taken, so cosine
    ends at the last step and the step milestones fall at 67% and 89%."""
    factors = [1.0, 1.2, 2.4, 1.7, 3.1] * 10
    for rounding, world in (("ceil", 1), ("stochastic", 2), ("ceil", 3)):
        sampler = RepeatFactorSampler(factors, num_replicas=world, seed=4, rounding=rounding)
        steps = train_det.epoch_steps(sampler, batch_size=4, epochs=5)
        real = []
        for epoch in range(5):
            sampler.set_epoch(epoch)
            real.append(
                len(torch.utils.data.DataLoader(range(10**4), batch_size=4, sampler=sampler))
            )
        assert steps == real, rounding
    assert sum(
        train_det.epoch_steps(RepeatFactorSampler(factors, rounding="ceil"), 4, 5)
    ) > 5 * math.ceil(sum(factors) / 4)
    args = train_det.get_args_parser().parse_args(["--warmup-iters", "10", "--lr", "0.1"])
    rates = train_det.learning_rates(args, 300)
    assert len(rates) == 300 and rates[9] == pytest.approx(0.1)
    assert [10 + int(np.flatnonzero(rates[10:] < r)[0]) for r in (0.05, 0.005)] == [201, 267]
    args.lr_schedule = "cosine"
    cosine = train_det.learning_rates(args, 300)
    assert len(cosine) == 300 and cosine[-1] < 1e-5 and cosine[-1] > 0
    args.warmup_iters = 301
    with pytest.raises(UserError, match="--warmup-iters 301 is longer than the whole run"):
        train_det.learning_rates(args, 300)


@pytest.mark.slow
def test_evaluations_run_only_when_due(data_dir, tmp_path):
    """Every epoch but the last (--no-final-eval: evaluate.py scores the final model), or
    none at all; the final metrics are only the last epoch's."""
    train_det.main(det_args(data_dir, tmp_path, "charted", "--no-final-eval"))
    history = json.loads((tmp_path / "charted" / "eval_history.json").read_text())
    meta = json.loads((tmp_path / "charted" / "fasterrcnn_final.json").read_text())
    assert [h["epoch"] for h in history] == [1] and meta["final_metrics"] is None
    train_det.main(det_args(data_dir, tmp_path, "none", "--eval-every", "0", "--no-final-eval"))
    assert json.loads((tmp_path / "none" / "eval_history.json").read_text()) == []


def test_flags_that_leave_no_image_or_need_normal_ones_name_themselves(tmp_path):
    data_dir = prepared_synthetic(tmp_path, num_images=30, seed=4)

    def choose(*argv):
        args = train_det.get_args_parser().parse_args(["--data-dir", str(data_dir), *argv])
        return train_det.choose_images(train_det.settle_defaults(args, {}), {})

    labeled, held_out, _ = choose("--labeled-fraction", "0.5", "--val-fraction", "0.25")
    assert held_out and labeled and not set(held_out) & set(labeled)
    for share in ("0.999", "0.001"):
        with pytest.raises(UserError, match=f"--val-fraction {share} holds out"):
            choose("--labeled-fraction", "0.5", "--val-fraction", share)
    (data_dir / "normal_annotations.json").unlink()  # as prepared without --keep-normal
    with pytest.raises(UserError, match="--negatives 0.5 needs the normal images.*--keep-normal"):
        choose("--negatives", "0.5")
