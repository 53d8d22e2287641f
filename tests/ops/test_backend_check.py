"""`map3d backends --check`: every available backend against the reference, in seconds."""

import torch

from map3d.ops import check, dispatch, reference


def _register(op, name, fn, supports=lambda *t, **o: True):
    dispatch.register(op, name, fn, lambda: None, supports, 30)


def test_the_check_passes_a_faithful_backend_and_catches_a_wrong_one(registry):
    _register("gather", "faithful", reference.gather)
    _register(
        "chamfer_distance",
        "off",
        lambda x, y, norm=2: reference.chamfer_distance(x, y, norm=norm) * 1.01,
    )
    _register("knn", "picky", reference.knn, supports=lambda *t, **o: False)
    results = {(r.op, r.backend): r for r in check.check_backends("cpu")}

    assert results["gather", "faithful"].ok and results["gather", "faithful"].error == 0.0
    for norm in (1, 2):  # both variants of the op run, forward and backward
        wrong = results[f"chamfer_distance norm={norm}", "off"]
        assert not wrong.ok and 5e-3 < wrong.error < 2e-2
    skipped = results["knn", "picky"]
    assert skipped.ok and skipped.error is None and "does not support" in skipped.note

    table = check.format_check(list(results.values()))
    assert "MISMATCH" in table and table.splitlines()[-1] == "1 passed, 2 failed"


def test_with_only_the_reference_there_is_nothing_to_compare(registry):
    for op in dispatch.OPS:
        for name in list(registry[op]):
            if name != "reference":
                del registry[op][name]
        dispatch._sort(op)
    assert check.check_backends("cpu") == []
    assert "nothing to compare" in check.format_check([])


def test_the_reference_ops_run_every_case_with_gradients():
    """Every case's inputs are valid for its op (run through the reference twice)."""
    g = torch.Generator().manual_seed(0)
    for op, _, case in check.CASES:
        args, kwargs, grads = case(torch.device("cpu"), g)
        outputs = check._outputs(op, "reference", args, kwargs, grads)
        assert len(outputs) == 1 + len(grads)
        assert check._relative_error(outputs, outputs) == 0.0


def test_backends_check_command(registry, capsys):
    from map3d.cli import main

    _register("gather", "faithful", reference.gather)
    assert main(["backends", "--check"]) == 0
    out = capsys.readouterr().out
    assert "faithful" in out and out.splitlines()[-1] == "1 passed, 0 failed"
    _register("gather", "off", lambda values, idx: reference.gather(values, idx) + 1)
    assert main(["backends", "--check", "--op", "gather"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
