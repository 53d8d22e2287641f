"""Your own shapes through the CLI: pretrain on an unlabelled folder, finetune on a labelled one,
predict on new files, reconstruct a file with `map3d viz` (tiny models, seconds on a CPU)."""

import csv
import json

import pytest

from map3d.cli import build_parser, main
from map3d.engine.checkpoint import load_checkpoint
from map3d.viz.ply import read_ply
from tests.data.shape_fixtures import make_shape_folder

pytest.importorskip("trimesh", reason="the shape folders hold meshes (pip install 'map3d[meshes]')")

PRETRAIN = "configs/smoke/folder_pretrain.yaml"
FINETUNE = "configs/smoke/folder_finetune.yaml"


def test_predict_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--checkpoint",
        "--csv",
        "--json",
        "--out",
        "--votes",
        "--category",
        "--batch-size",
        "--device",
        "--skip-bad",
        "FILE_OR_FOLDER",
    ):
        assert option in text


def test_pretrain_finetune_predict_viz_on_folders(tmp_path, capsys):
    unlabelled = make_shape_folder(
        tmp_path / "mine", classes=("box", "sphere", "cone"), per_class=4, labelled=False, seed=1
    )
    labelled = make_shape_folder(tmp_path / "labelled", per_class=8, seed=2)
    new = make_shape_folder(tmp_path / "new", per_class=2, formats=(".stl", ".pcd"), seed=3)
    pre, ft = tmp_path / "pre", tmp_path / "ft"

    assert (
        main(["pretrain", "--config", PRETRAIN, "--data", str(unlabelled), "--out", str(pre)]) == 0
    )
    assert (unlabelled / ".map3d_cache" / "v2").is_dir()
    assert (
        main(
            [
                "finetune",
                "--config",
                FINETUNE,
                "--data",
                str(labelled),
                "--out",
                str(ft),
                "--pretrained",
                str(pre / "last.pt"),
            ]
        )
        == 0
    )
    ckpt = load_checkpoint(ft / "best.pt")
    assert ckpt["data_info"]["class_names"] == ["box", "sphere"]
    assert ckpt["model_config"]["num_classes"] == 2
    capsys.readouterr()

    out_csv, out_json = tmp_path / "pred.csv", tmp_path / "pred.json"
    single = new / "box" / "box000.stl"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(ft),
                str(new / "sphere"),
                str(single),
                "--csv",
                str(out_csv),
                "--json",
                str(out_json),
                "--votes",
                "2",
                "--batch-size",
                "2",
                "--device",
                "auto",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["file", "class", "probability"]
    assert str(single) in printed and "3 file(s) predicted" in printed
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["file"] for r in rows] == [
        str(new / "sphere" / "sphere000.stl"),
        str(new / "sphere" / "sphere001.pcd"),
        str(single),
    ]
    assert all(
        r["class"] in ("box", "sphere") and 0.5 <= float(r["probability"]) <= 1.0 for r in rows
    )
    result = json.loads(out_json.read_text())
    assert result["task"] == "classify" and result["votes"] == 2
    assert len(result["predictions"]) == 3

    viz = tmp_path / "viz"
    assert (
        main(
            [
                "viz",
                "--checkpoint",
                str(pre / "last.pt"),
                "--file",
                str(single),
                "--out",
                str(viz),
                "--renderer",
                "matplotlib",
                "--size",
                "120",
                "120",
            ]
        )
        == 0
    )
    assert (viz / "box000.png").is_file()
    assert len(read_ply(viz / "box000.ply").points) > 0


def test_predict_part_labels_and_errors(pretrained, tmp_path, capsys):
    seg = tmp_path / "seg"
    assert (
        main(
            [
                "finetune",
                "--config",
                "configs/smoke/partseg.yaml",
                "--out",
                str(seg),
                "--set",
                "output.progress=false",
            ]
        )
        == 0
    )
    shapes = make_shape_folder(
        tmp_path / "chairs", classes=("chair",), per_class=2, formats=(".obj", ".npy")
    )
    out = tmp_path / "parts"
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(seg / "last.pt"),
                str(shapes),
                "--out",
                str(out),
                "--json",
                str(tmp_path / "p.json"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert [r["category"] for r in rows] == ["Chair", "Chair"]  # from the folder name
    ply = read_ply(out / "chair000.parts.ply")
    assert ply.colors is not None and set(ply.extra["part"].tolist()) <= {12, 13, 14, 15}

    assert (
        main(["predict", "--checkpoint", str(seg / "last.pt"), str(shapes), "--category", "Teapot"])
        == 2
    )
    assert "--category" in capsys.readouterr().err

    (shapes / "chair" / "broken.obj").write_text("v 0 0 0\n")
    args = ["predict", "--checkpoint", str(seg / "last.pt"), str(shapes), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "broken.obj: empty mesh" in err
    assert main([*args, "--skip-bad"]) == 0
    assert "skipped" in capsys.readouterr().err

    assert main(["predict", "--checkpoint", str(pretrained / "last.pt"), str(shapes)]) == 2
    assert "classification or part-segmentation checkpoint" in capsys.readouterr().err
