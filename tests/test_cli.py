"""`map3d pretrain | finetune | eval | export` end to end on the smoke configs (CPU, seconds)."""

import json

import pytest

from map3d.cli import build_parser, main
from map3d.engine.checkpoint import load_checkpoint, model_state_dict

PRETRAIN = "configs/smoke/pretrain.yaml"
FINETUNE = "configs/smoke/finetune.yaml"


@pytest.mark.parametrize("command", ["pretrain", "finetune", "eval", "export"])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    options = {
        "pretrain": ["--config", "--data", "--out", "--set", "--resume", "--device", "--seed"],
        "finetune": ["--pretrained", "--fold", "--resume", "--set"],
        "eval": ["--checkpoint", "--votes", "--svm", "--out"],
        "export": ["--prefix"],
    }[command]
    for option in options:
        assert option in text


def test_pretrain_finetune_eval_export(tmp_path, capsys, caplog):
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    assert main(["pretrain", "--config", PRETRAIN, "--out", str(pre)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {pre / 'last.pt'}" in out and "map3d finetune --pretrained" in out
    for name in ("config.yaml", "metrics.jsonl", "train.log", "last.pt", "encoder.safetensors"):
        assert (pre / name).exists(), name
    assert not (pre / "best.pt").exists()  # no test split: the training loss picks no model
    ckpt = load_checkpoint(pre / "last.pt")
    assert ckpt["model_name"] == "hybridmt3d_tiny" and ckpt["task"] == "pretrain"
    assert ckpt["model_config"]["num_groups"] == 8 and ckpt["step"] == 4

    caplog.set_level("INFO", logger="map3d")
    assert (
        main(
            [
                "finetune",
                "--config",
                FINETUNE,
                "--out",
                str(ft),
                "--pretrained",
                str(pre / "last.pt"),
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert "0 missing, 0 unexpected keys" in (ft / "train.log").read_text()
    assert "map3d eval --checkpoint" in capsys.readouterr().out
    assert load_checkpoint(ft / "best.pt")["config"]["train"]["seed"] == 1

    assert (
        main(["eval", "--checkpoint", str(ft / "best.pt"), "--out", str(tmp_path / "results.json")])
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("oa", "macc", "vote_oa", "vote_macc"):
        assert 0.0 <= results[key] <= 100.0
    assert results["n"] == 8 and results["protocol"]["votes"] == 2
    assert results["protocol"]["vote_augment"] == ["scale_translate"]

    assert main(["export", str(pre), str(tmp_path / "enc.safetensors")]) == 0
    weights = model_state_dict(tmp_path / "enc.safetensors")
    assert weights and all(k.startswith("encoder.") for k in weights)


def test_eval_svm_probe(pretrained, tmp_path):
    """Linear-SVM probe on the frozen pretrained encoder (the pretraining config's decoder
    overrides are dropped, the synthetic set switches to labelled items)."""
    pytest.importorskip(
        "sklearn", reason="the SVM probe needs scikit-learn (pip install 'map3d[images]')"
    )
    out = tmp_path / "svm.json"
    assert main(["eval", "--checkpoint", str(pretrained), "--svm", "--out", str(out)]) == 0
    svm = json.loads(out.read_text())["svm"]
    assert 0.0 <= svm["svm_oa"] <= 100.0 and svm["protocol"]["test_samples"] == 16


def test_config_errors_are_one_line(tmp_path, capsys):
    assert main(["pretrain", "--config", PRETRAIN, "--set", "optim.lrr=1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(tmp_path)]) == 2
    assert "--data needs a config" in capsys.readouterr().err
    assert main(["finetune", "--config", PRETRAIN]) == 2
    assert "map3d pretrain" in capsys.readouterr().err


def test_fewshot_all_folds(tmp_path, capsys):
    from map3d.data.layouts import make_modelnet_fewshot

    root = make_modelnet_fewshot(tmp_path / "data", way=5, shot=10, folds=2, num_points=256)
    out = tmp_path / "fs"
    assert (
        main(
            [
                "finetune",
                "--config",
                "configs/smoke/fewshot.yaml",
                "--data",
                str(root),
                "--out",
                str(out),
                "--fold",
                "all",
            ]
        )
        == 0
    )
    summary = json.loads((out / "fewshot.json").read_text())
    assert set(summary["folds"]) == {"0", "1"} and summary["n"] == 2
    assert summary["way"] == 5 and summary["shot"] == 10
    assert "few-shot 5-way 10-shot" in capsys.readouterr().out
    assert (out / "fold1" / "best.pt").exists()


def test_help_imports_neither_torch_nor_dynamo():
    """`map3d --help` and every subcommand's --help build the parser without torch (~1 s to
    import on a small CPU); `import map3d.ops` does not import torch._dynamo (~1 s more)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from map3d.cli import build_parser\n"
        "build_parser()\n"
        "assert 'torch' not in sys.modules, 'building the parser imported torch'\n"
        "import map3d.ops, map3d.models\n"
        "assert 'torch._dynamo' not in sys.modules, 'importing map3d imported torch._dynamo'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_command_modules_do_not_import_the_cli():
    """Every subcommand is declared with `map3d.command.Command`; the modules declaring them do
    not import `map3d.cli`, which only lists them."""
    import subprocess
    import sys

    from map3d.cli import COMMANDS

    modules = sorted({target.split(":")[0] for target in COMMANDS.values()})
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "assert 'map3d.cli' not in sys.modules, 'a command module imported map3d.cli'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def pretrain_images(config, out):
    """One epoch of image pretraining under `config` into `out`, in batches of 256."""
    return main(
        [
            "pretrain",
            "--config",
            config,
            "--out",
            str(out),
            "--epochs",
            "1",
            "--set",
            "data.batch_size=256",
        ]
    )


def test_image_pretraining_prints_a_finetune_command_that_works(pretrained, tmp_path, capsys):
    """The next step printed after image pretraining finetunes an image model; point weights
    given to an image run (and image weights to a point run) are a one-line error that says
    what to run instead."""
    pytest.importorskip("sklearn", reason="the built-in digits need scikit-learn ([images])")
    pre = tmp_path / "pre"
    assert pretrain_images("configs/pretrain/image_tiny.yaml", pre) == 0
    ckpt = load_checkpoint(pre / "last.pt")
    assert (ckpt["modality"], ckpt["task"]) == ("images", "pretrain")
    printed = capsys.readouterr().out.splitlines()
    command = printed[printed.index("finetune from it:") + 1].split()
    assert command[:3] == ["map3d", "finetune", "--config"]
    assert command[3] == "configs/finetune/image_tiny_digits.yaml"
    assert main([*command[1:], "--out", str(tmp_path / "ft"), "--epochs", "1"]) == 0

    capsys.readouterr()
    assert (
        main(
            [
                "finetune",
                "--config",
                "configs/finetune/image_tiny_digits.yaml",
                "--pretrained",
                str(pretrained / "last.pt"),
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error: " in err and "holds points weights" in err
    assert f"map3d finetune --pretrained {pretrained / 'last.pt'}" in err
    for weights in (pre / "last.pt", pre / "encoder.safetensors"):
        assert (
            main(
                [
                    "finetune",
                    "--config",
                    FINETUNE,
                    "--pretrained",
                    str(weights),
                    "--out",
                    str(tmp_path / "bad2"),
                ]
            )
            == 2
        )
        err = capsys.readouterr().err.strip()
        assert (
            len(err.splitlines()) == 1
            and "holds images weights" in err
            and "image_tiny_digits.yaml" in err
        )


def test_a_wider_encoder_says_which_overrides_to_repeat(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the built-in digits need scikit-learn ([images])")
    pre = tmp_path / "pre"
    assert pretrain_images("configs/pretrain/image_digits_c64.yaml", pre) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "finetune",
                "--config",
                "configs/finetune/image_tiny_digits.yaml",
                "--pretrained",
                str(pre / "last.pt"),
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not fit this run's map_nano_patch4_16" in err
    assert "--set model.overrides.dim=64 --set model.overrides.num_heads=4" in err
