"""python -m cxr.experiment: the stage plan, a tiny end-to-end run, refusal and resume."""

import json
import os
import sys
import xml.dom.minidom

import pytest
import torch
import torchvision

from cxr import experiment
from cxr.data.image_lists import read_image_list
from cxr.pipeline import runner
from cxr.pipeline.runner import open_experiment
from cxr.pipeline.stages import REPO, path_from, plan_stages
from cxr.run import layout
from cxr.run.errors import UserError
from cxr.run.outputs import open_output_folder

TINY = [
    "--synthetic-images",
    "80",
    "--synthetic-size",
    "64",
    "--ssl-image-size",
    "64",
    "--det-image-size",
    "64",
    "--ssl-epochs",
    "1",
    "--det-epochs",
    "1",
    "--ssl-batch-size",
    "16",
    "--det-roi-batch-size",
    "32",
    "--pictures",
    "2",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--det-warmup-iters",
    "2",
]


def planned(tmp_path, *argv):
    args = experiment.parse_args(["--out", str(tmp_path), *argv])
    return plan_stages(args, experiment.settings_from(args), tmp_path)


def test_sweep_pretrains_and_fine_tunes_each_fraction_twice_plus_the_all_labels_baseline(tmp_path):
    stages = {
        s.name: s for s in planned(tmp_path, "--ssl-fractions", "0.2,0.8", "--train-seeds", "0,3")
    }
    assert [n for n in stages if n.startswith("det-")] == [
        "det-ssl20-s0",
        "det-random20-s0",
        "det-ssl20-s3",
        "det-random20-s3",
        "det-ssl80-s0",
        "det-random80-s0",
        "det-ssl80-s3",
        "det-random80-s3",
        "det-random100-s0",
        "det-random100-s3",
    ]
    random20 = stages["det-random20-s3"].argv
    assert (
        random20[random20.index("--labeled-fraction") + 1] == "0.8"
        and random20[random20.index("--seed") + 1] == "3"
    )
    pretrain = stages["pretrain-ssl80-s3"].argv
    assert (
        pretrain[pretrain.index("--ssl-fraction") + 1] == "0.8"
        and pretrain[pretrain.index("--seed") + 1] == "3"
    )
    assert {
        "map-ssl20-s0",
        "map-random80-s3",
        "map-random100-s3",
        "probe-random-s3",
        "report",
    } <= set(stages)


def flag_values(command):
    """{flag: value} of a command line (a flag without a value maps to True)."""
    values, flag = {}, None
    for word in command:
        if word.startswith("--"):
            flag = word
            values[flag] = True
        elif flag is not None:
            values[flag], flag = word, None
    return values


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
def test_the_two_arms_differ_only_in_name_and_init(tmp_path, fraction):
    stages = {s.name: s for s in planned(tmp_path, "--ssl-fractions", str(fraction))}
    p = round(fraction * 100)
    ssl, random = (flag_values(stages[f"det-{init}{p}-s0"].argv) for init in ("ssl", "random"))
    assert ssl.keys() == random.keys()
    assert {k for k in ssl if ssl[k] != random[k]} == {"--experiment-name", "--init"}
    assert float(ssl["--labeled-fraction"]) == pytest.approx(1 - fraction)


def test_torchrun_and_preset_overrides_reach_the_commands(tmp_path):
    stages = {
        s.name: s
        for s in planned(
            tmp_path, "--nproc-per-node", "4", "--preset", "paper", "--det-epochs", "3"
        )
    }
    command = stages["det-ssl60-s0"].command(nproc=4)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert (
        command[command.index("--epochs") + 1] == "3"
        and command[command.index("--arch") + 1] == "resnet50"
    )
    pretrain = stages["pretrain-ssl60-s0"].argv
    assert (
        pretrain[pretrain.index("--temperature") + 1] == "0.5"
    )  # the paper preset keeps the seed's
    cpu = {s.name: s for s in planned(tmp_path, "--ssl-temperature", "0.3")}[
        "pretrain-ssl60-s0"
    ].argv
    assert cpu[cpu.index("--temperature") + 1] == "0.3"


def test_nih_data_and_extra_images_reach_prepare_and_every_pretraining(tmp_path):
    nih, archive = tmp_path / "nih", tmp_path / "archive"
    (nih / "images").mkdir(parents=True)
    (nih / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    archive.mkdir()
    stages = {
        s.name: s
        for s in planned(
            tmp_path / "out",
            "--nih",
            str(nih),
            "--extra-images",
            str(archive),
            "--train-seeds",
            "0,1",
        )
    }
    assert "synthetic" not in stages
    prepare = flag_values(stages["prepare"].argv)
    # paths relative to the experiment folder, from where every stage runs
    assert prepare["--format"] == "nih" and prepare["--csv"] == "../nih/BBox_List_2017.csv"
    for seed in (0, 1):
        assert flag_values(stages[f"pretrain-ssl60-s{seed}"].argv)["--extra-images"] == "../archive"
    with pytest.raises(SystemExit):
        experiment.parse_args(["--nih", str(nih), "--vinbig", str(nih)])


def test_replace_never_deletes_a_folder_cxr_did_not_make_or_the_inputs(tmp_path):
    own = tmp_path / "mine"
    (own / "sub").mkdir(parents=True)
    (own / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not made by cxr"):
        experiment.main(["--out", str(own), "--replace", *TINY])
    assert (own / "notes.txt").read_text() == "mine" and (own / "sub").is_dir()
    vin = tmp_path / "vin"
    vin.mkdir()
    (vin / "train.csv").write_text("image_id\n")
    for out in (tmp_path, vin):
        with pytest.raises(UserError, match="contains the input"):
            experiment.main(["--out", str(out), "--vinbig", str(vin), "--replace", *TINY])
    assert (vin / "train.csv").is_file()


def reopened(argv):
    args = experiment.parse_args(argv)
    with open_output_folder(args.out, command="test") as folder:
        return open_experiment(args, experiment.settings_from(args), folder)


def test_resume_may_add_seeds_after_the_old_ones_and_then_redoes_the_report(tmp_path):
    out = tmp_path / "exp"
    first = reopened(["--out", str(out), "--train-seeds", "0", *TINY])
    first.record["stages"] = {"det-ssl60-s0": {"status": "done"}, "report": {"status": "done"}}
    first.save()

    for seeds in ("1", "1,0", "2,0"):
        with pytest.raises(UserError, match="settings differ.*--train-seeds changed"):
            reopened(["--out", str(out), "--resume", "--train-seeds", seeds, *TINY])
    resumed = reopened(["--out", str(out), "--resume", "--train-seeds", "0,1,2", *TINY])
    assert resumed.record["config"]["train_seeds"] == [0, 1, 2]
    stages = {s.name: s for s in planned(out, "--train-seeds", "0,1,2", *TINY)}
    assert resumed.done(stages["det-ssl60-s0"]) and not resumed.done(stages["report"])


def test_resume_names_each_changed_flag_and_lets_workers_change(tmp_path):
    out = tmp_path / "exp"
    first = reopened(["--out", str(out), *TINY])
    first.save()
    for flag, value in (("--det-epochs", "3"), ("--seed", "4"), ("--preset", "paper")):
        changed = (
            ": --arch, .*--preset, .* changed;" if flag == "--preset" else f": {flag} changed;"
        )
        with pytest.raises(UserError, match=changed):
            reopened(["--out", str(out), "--resume", *TINY, flag, value])
    resumed = reopened(["--out", str(out), "--resume", *TINY, "--workers", "2"])
    assert resumed.record["config"]["settings"]["workers"] == 2
    record = json.loads((out / "experiment.json").read_text())
    del record["config"]["drop_prepared"]  # a record that predates a switch: unchanged while off
    (out / "experiment.json").write_text(json.dumps(record))
    reopened(["--out", str(out), "--resume", *TINY])
    with pytest.raises(UserError, match=": --drop-prepared changed;"):
        reopened(["--out", str(out), "--resume", *TINY, "--drop-prepared"])


@pytest.mark.slow
def test_tiny_experiment_end_to_end_refuses_rerun_and_resumes(tmp_path, capsys):
    weights = tmp_path / "imagenet-like.pth"  # a torchvision ResNet state dict, fc included
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), weights)
    out = tmp_path / "exp"
    tiny = [*TINY, "--pretrained-init", str(weights)]  # and a third arm
    experiment.main(["--out", str(out), *tiny])
    record = json.loads((out / "experiment.json").read_text())
    assert all(stage["status"] == "done" for stage in record["stages"].values())
    assert len(record["stages"]) == 13  # 10, and the third arm's probe, training and mAP

    runs = out / "runs"
    ssl_pool = set(read_image_list(runs / "ssl60-s0" / "pretrain" / layout.SSL_IMAGES).names)
    labeled = read_image_list(runs / "ssl60-s0" / layout.LABELED_IMAGES).names
    assert (
        labeled == read_image_list(runs / "random60-s0" / layout.LABELED_IMAGES).names
    )  # same labeled images
    assert labeled and not ssl_pool & set(labeled)
    ssl_args, random_args = (
        json.loads((runs / name / "args.json").read_text())["args"]
        for name in ("ssl60-s0", "random60-s0")
    )
    assert {k for k in ssl_args if ssl_args[k] != random_args[k]} == {"experiment_name", "init"}

    report = (out / "report.md").read_text()
    assert (
        report.startswith("# cxr experiment report") and "**Did self-supervision help?**" in report
    )
    for name, init in (("ssl60-s0", "SSL"), ("random60-s0", "random")):
        metrics = json.loads((runs / name / "eval" / "metrics.json").read_text())
        assert f"| 60% | {len(labeled)} | {init} | {metrics['AP']:.3f} [" in report
    assert "| 60% | | **SSL - random** |" in report
    assert "intervals over the training seeds and the test images" in report
    for chart in ("ssl_loss", "det_loss", "map_per_epoch", "per_class_ap50"):
        assert f"(charts/{chart}.svg)" in report
        xml.dom.minidom.parse(str(out / "charts" / f"{chart}.svg"))
    for arm in ("ssl60-s0", "random60-s0", "pretrained60-s0"):  # drawn by the mAP stages
        assert (runs / arm / layout.EVAL / layout.PICTURES / layout.CONTACT_SHEET).is_file()

    pretrained_args = json.loads((runs / "pretrained60-s0" / "args.json").read_text())["args"]
    assert {k for k in ssl_args if ssl_args[k] != pretrained_args[k]} == {"experiment_name", "init"}
    assert (out / pretrained_args["init"]).resolve() == weights.resolve()
    assert read_image_list(runs / "pretrained60-s0" / layout.LABELED_IMAGES).names == labeled
    metrics = json.loads((runs / "pretrained60-s0" / "eval" / "metrics.json").read_text())
    assert f"| 60% | {len(labeled)} | pretrained | {metrics['AP']:.3f} [" in report
    assert "| 60% | | **SSL - pretrained** |" in report and "SSL minus pretrained: mAP" in report
    assert "for the pretrained one" in report  # its linear probe beside the others

    with pytest.raises(UserError, match="already holds an experiment"):
        experiment.main(["--out", str(out), *tiny])
    with pytest.raises(UserError, match="settings differ.*--ssl-fractions changed"):
        experiment.main(["--out", str(out), "--resume", "--ssl-fractions", "0.5", *tiny])

    # Pretend the run stopped during the random-init fine-tuning: it and everything after it rerun,
    # the fine-tuning continuing from its checkpoint.
    names = list(record["stages"])
    for name in names[names.index("det-random60-s0") :]:
        record["stages"][name]["status"] = "running"
    (out / "experiment.json").write_text(json.dumps(record))
    (out / "report.md").unlink()
    for name in ("fasterrcnn_final.pth", "fasterrcnn_final.json"):  # stopped before its end
        (runs / "random60-s0" / name).unlink()
    capsys.readouterr()
    experiment.main(["--out", str(out), "--resume", *tiny])
    printed = capsys.readouterr().out
    # Skipped: every stage before it, and the third arm's fine-tuning, whose model was written.
    assert printed.count("done before, skipped") == names.index("det-random60-s0") + 1
    rerun = json.loads((out / "experiment.json").read_text())["stages"]["det-random60-s0"][
        "command"
    ]
    assert rerun.endswith("--resume") and (out / "report.md").is_file()


def test_pretrained_init_of_another_architecture_is_refused_before_any_stage(tmp_path):
    weights = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), weights)
    out = tmp_path / "exp"
    with pytest.raises(UserError, match="holds a resnet34 trunk, but the arms train a resnet18"):
        experiment.main(["--out", str(out), "--pretrained-init", str(weights), *TINY])
    assert not out.exists()


def test_every_script_a_stage_runs_is_in_the_checkout(tmp_path):
    for stage in planned(tmp_path, "--pretrained-init", str(tmp_path / "w.pth")):
        if stage.program[0] != "-m":
            assert (REPO / stage.program[0]).is_file(), stage.program


def test_input_paths_stay_as_written_where_they_reach_the_same_file(tmp_path):
    (tmp_path / "real" / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "deep" / "a" / "b").mkdir(parents=True)
    (tmp_path / "short").symlink_to(tmp_path / "deep" / "a" / "b")
    (tmp_path / "inputs").mkdir()
    # the link kept, not resolved to real/
    assert path_from(tmp_path / "exp", tmp_path / "link" / "data") == "../link/data"
    # ../../inputs from short/exp would land in deep/a/: the absolute path instead
    assert path_from(tmp_path / "short" / "exp", tmp_path / "inputs") == str(tmp_path / "inputs")


class SleepingStage:
    """A stage whose command says its process id, then waits a minute."""

    run_dir = None

    def __init__(self, pid_file):
        self.pid_file = pid_file

    def command(self, nproc, display=False):
        code = (
            "import os, time; open(%r, 'w').write(str(os.getpid())); print('started', flush=True);"
            " time.sleep(60)" % str(self.pid_file)
        )
        return [sys.executable, "-c", code]


def test_a_stage_does_not_outlive_the_experiment_stopped_by_a_signal(tmp_path, monkeypatch):
    def interrupted(text, **kwargs):  # the SIGTERM handler's exception, once the stage runs
        if text.strip() == "started":
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "print", interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        runner.run_command(
            SleepingStage(tmp_path / "pid"), tmp_path, tmp_path / "log", resuming=False, nproc=1
        )
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "pid").read_text()), 0)
