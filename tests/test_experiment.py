"""python -m cxr.experiment: the stage plan, a tiny end-to-end run, refusal and resume."""

import json
import xml.dom.minidom

import pytest

from cxr import experiment
from cxr.errors import UserError

TINY = ["--synthetic-images", "80", "--synthetic-size", "64", "--ssl-image-size", "64", "--det-image-size", "64",
        "--ssl-epochs", "1", "--det-epochs", "1", "--ssl-batch-size", "16", "--det-roi-batch-size", "32",
        "--pictures", "2", "--workers", "0", "--device", "cpu"]


def planned(tmp_path, *argv):
    args = experiment.get_args_parser().parse_args(["--out", str(tmp_path), *argv])
    args.fractions = experiment.parse_fractions(args.ssl_fractions)
    return experiment.plan_stages(args, experiment.settings_from(args), tmp_path)


def test_sweep_pretrains_and_fine_tunes_each_fraction_twice_plus_the_all_labels_baseline(tmp_path):
    stages = {s.name: s for s in planned(tmp_path, "--ssl-fractions", "0.2,0.8")}
    assert [n for n in stages if n.startswith("det-")] == ["det-ssl20", "det-random20", "det-ssl80", "det-random80",
                                                           "det-random100"]
    random20 = stages["det-random20"].command
    assert random20[random20.index("--labeled-fraction") + 1] == "0.8"     # the same labeled images as ssl20
    assert "--labeled-fraction" not in stages["det-ssl20"].command          # ssl20 reads its split from pretrain/
    assert stages["ssl80"].command[stages["ssl80"].command.index("--ssl-fraction") + 1] == "0.8"
    assert {"map-ssl20", "map-random80", "map-random100", "report"} <= set(stages)


def test_torchrun_and_preset_overrides_reach_the_commands(tmp_path):
    stages = {s.name: s for s in planned(tmp_path, "--nproc-per-node", "4", "--preset", "paper", "--det-epochs", "3")}
    command = stages["det-ssl60"].command
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert command[command.index("--epochs") + 1] == "3" and command[command.index("--arch") + 1] == "resnet50"
    pretrain = stages["ssl60"].command
    assert pretrain[pretrain.index("--temperature") + 1] == "0.5"            # the paper preset keeps the seed's
    cpu = {s.name: s for s in planned(tmp_path, "--ssl-temperature", "0.3")}["ssl60"].command
    assert cpu[cpu.index("--temperature") + 1] == "0.3"


def test_bad_fractions_are_refused():
    for text in ("0", "0.5,1.0", "a,b", "0.5,0.501"):
        with pytest.raises(UserError, match="--ssl-fractions"):
            experiment.parse_fractions(text)


@pytest.mark.slow
def test_tiny_experiment_end_to_end_refuses_rerun_and_resumes(tmp_path, capsys):
    out = tmp_path / "exp"
    experiment.main(["--out", str(out), *TINY])
    record = json.loads((out / "experiment.json").read_text())
    assert all(stage["status"] == "done" for stage in record["stages"].values())
    assert len(record["stages"]) == 12

    runs = out / "runs"
    ssl_pool = set((runs / "ssl60" / "pretrain" / "ssl_images.txt").read_text().split())
    labeled = (runs / "ssl60" / "labeled_images.txt").read_text().split()
    assert labeled == (runs / "random60" / "labeled_images.txt").read_text().split()   # same labeled images
    assert labeled and not ssl_pool & set(labeled)

    report = (out / "report.md").read_text()
    assert report.startswith("# cxr experiment report") and "**Did self-supervision help?**" in report
    for name, init in (("ssl60", "SSL"), ("random60", "random")):
        metrics = json.loads((runs / name / "eval" / "metrics.json").read_text())
        assert f"| 60% | {len(labeled)} | {init} | {metrics['AP']:.3f} | {metrics['AP50']:.3f} |" in report
    for chart in ("ssl_loss", "det_loss", "map_per_epoch", "per_class_ap50"):
        assert f"(charts/{chart}.svg)" in report
        xml.dom.minidom.parse(str(out / "charts" / f"{chart}.svg"))
    assert (runs / "ssl60" / "eval" / "visualize" / "contact_sheet.png").is_file()

    with pytest.raises(UserError, match="already holds an experiment"):
        experiment.main(["--out", str(out), *TINY])
    with pytest.raises(UserError, match="settings differ.*ssl_fractions"):
        experiment.main(["--out", str(out), "--resume", "--ssl-fractions", "0.5", *TINY])

    # Pretend the run stopped during the random-init fine-tuning: it and everything after it rerun,
    # the fine-tuning continuing from its checkpoint.
    names = list(record["stages"])
    for name in names[names.index("det-random60"):]:
        record["stages"][name]["status"] = "running"
    (out / "experiment.json").write_text(json.dumps(record))
    (out / "report.md").unlink()
    capsys.readouterr()
    experiment.main(["--out", str(out), "--resume", *TINY])
    printed = capsys.readouterr().out
    assert printed.count("done before, skipped") == names.index("det-random60")
    rerun = json.loads((out / "experiment.json").read_text())["stages"]["det-random60"]["command"]
    assert rerun.endswith("--resume") and (out / "report.md").is_file()
