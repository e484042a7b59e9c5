"""The sweep end to end on Ray (local): rows, resume, a failing cell, and the report's table and plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeasr.bench.grid import Grid
from edgeasr.bench.quant import write_tables
from edgeasr.bench.report import STUDY_END, STUDY_START, latest_rows, update_study_page, write_report
from edgeasr.bench.sweep import read_rows, run_sweep
from edgeasr.data import build_dataset
from edgeasr.errors import EdgeASRError
from edgeasr.quant.methods import available_methods

SECOND_METHOD = next((m for m in ("hqq", "gptq", "awq") if m in available_methods()), None)


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory) -> Path:
    build_dataset("asterisk-en")
    methods = ["fp", "rtn"] + ([SECOND_METHOD] if SECOND_METHOD else []) + ["no-such-method"]
    path = tmp_path_factory.mktemp("grid") / "tiny.toml"
    path.write_text(f"""
models = ["moonshine-tiny"]
methods = {methods!r}
bits = ["w8a16", "w4a16"]
sets = ["asterisk-en"]
limit = 3
[calibration]
n_clips = 4
max_decoder_tokens = 32
""".replace("'", '"'))
    return path


def test_sweep_runs_resumes_records_failures_and_reports(grid_file, tmp_path):
    grid = Grid.from_toml(grid_file)
    results = tmp_path / "results.jsonl"
    summary = run_sweep(grid, results, num_cpus=2, progress=False)
    rows = read_rows(results)
    assert summary.ran == len(rows) == len(grid.cells()) == 1 + 2 * (len(grid.methods) - 1)
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    assert {r["method"] for r in failed} == {"no-such-method"} and summary.failed == 2
    assert all("unknown method" in r["error"] for r in failed)
    for row in ok:
        assert row["utterances"] == 3 and 0 <= row["wer"] < 50 and row["rtfx"] > 0
        assert row["ref_bops"] > 0 and row["ref_memory_io_bytes"] > 0 and row["versions"]["torch"]
    by_bits = {r["bits"]: r for r in ok if r["method"] == "rtn"}
    fp = next(r for r in ok if r["method"] == "fp")
    assert fp["weight_bytes"] > by_bits["w8a16"]["weight_bytes"] > by_bits["w4a16"]["weight_bytes"]
    assert fp["ref_bops"] > by_bits["w8a16"]["ref_bops"] > by_bits["w4a16"]["ref_bops"]

    again = run_sweep(grid, results, num_cpus=2, progress=False)
    assert again.ran == 0 and again.skipped == len(rows) and len(read_rows(results)) == len(rows)

    files = write_report(results, tmp_path / "report")
    text = files.markdown.read_text()
    assert "### moonshine-tiny on asterisk-en" in text and "| rtn |" in text and "W4A16" in text
    assert "failed" in text
    assert len(files.plots) == 4 and any("wer_vs_total_bytes" in p.name for p in files.plots)
    for plot in files.plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000

    csv_path, md_path = write_tables(latest_rows(read_rows(results)), tmp_path / "quant")
    assert len(csv_path.read_text().splitlines()) == 1 + len(rows)
    table = md_path.read_text()
    fp_wer = f"{fp['wer']:.2f}"
    assert f"FP: {fp_wer}" in table and f"| rtn | {by_bits['w8a16']['wer']:.2f}" in table
    assert "- W8A16 within +0.2 of FP: " in table and "- best W4A16 within +0.5 of FP: " in table

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{STUDY_START.format(dataset='asterisk-en')}\nstale\n{STUDY_END}\noutro\n")
    update_study_page(readme, results)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{STUDY_END}\noutro\n") and "stale" not in text
    assert "<summary>moonshine-tiny" in text and "| rtn | " in text and f"{by_bits['w4a16']['wer']:.2f}" in text
    update_study_page(readme, results)
    assert readme.read_text() == text  # refreshing twice changes nothing
    readme.write_text("no markers here")
    with pytest.raises(EdgeASRError, match="no block to update"):
        update_study_page(readme, results)


def test_grid_rejects_bad_bit_settings(tmp_path):
    from edgeasr.bench.grid import GridError

    path = tmp_path / "bad.toml"
    path.write_text('models = ["moonshine-tiny"]\nmethods = ["rtn"]\nbits = ["4bit"]\n')
    with pytest.raises(GridError, match="w4a16"):
        Grid.from_toml(path).cells()


def test_grid_order_and_method_wildcard(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('models = ["a", "b"]\nmethods = ["fp", "rtn", "*"]\nbits = ["w4a16", "w8a16"]\norder = "bits"\n')
    grid = Grid.from_toml(path)
    methods = grid.expanded_methods()
    assert methods[:2] == ["fp", "rtn"] and set(methods[2:]) == set(available_methods()) - {"rtn"}
    cells = grid.cells()
    assert [c.recipe.model for c in cells[:2]] == ["a", "b"] and all(c.is_fp for c in cells[:2])
    first_setting = [c for c in cells[2:] if c.bits_label == "w4a16"]
    assert cells[2:2 + len(first_setting)] == first_setting  # one bit setting across both models first
    assert len({c.key for c in cells}) == len(cells) == 2 + 2 * 2 * (len(methods) - 1)


def test_a_revised_method_gets_new_cell_keys_and_the_others_keep_theirs(tmp_path, monkeypatch):
    """A resumed sweep must not take a row made by a method's earlier default fit for the current one (HQQ's
    zero points changed under the same recipe); methods never revised keep their keys, so their rows stay done."""
    from edgeasr.quant import methods

    path = tmp_path / "grid.toml"
    path.write_text('models = ["a"]\nmethods = ["fp", "rtn", "hqq"]\nbits = ["w4a16"]\n')
    before = {c.label: c.key for c in Grid.from_toml(path).cells()}
    monkeypatch.setitem(methods.REVISIONS, "hqq", methods.REVISIONS["hqq"] + 1)
    after = {c.label: c.key for c in Grid.from_toml(path).cells()}
    changed = {label for label in before if before[label] != after[label]}
    assert changed == {label for label in before if "-hqq-" in label} and len(changed) == 1


def test_a_row_keyed_before_a_later_recipe_field_existed_still_names_its_cell(tmp_path):
    """`group_size_at` joined `Recipe` after the held-out grids had written rows: their keys hash the recipe without
    it, and a resumed sweep must count them as done instead of measuring the cells again."""
    import dataclasses
    import hashlib
    import json

    from edgeasr.bench.grid import RECIPE_FIELDS_ADDED_LATER

    path = tmp_path / "grid.toml"
    path.write_text('models = ["a"]\nmethods = ["rtn"]\nbits = ["w4a16"]\n')
    cell = Grid.from_toml(path).cells()[0]
    recipe = {k: v for k, v in cell.recipe.to_dict().items() if k not in RECIPE_FIELDS_ADDED_LATER}
    written_then = hashlib.sha256(json.dumps({"recipe": recipe, "dataset": cell.dataset, "limit": cell.limit,
                                              "spread": cell.spread}, sort_keys=True).encode()).hexdigest()[:16]
    assert cell.keys == (cell.key, written_then) and written_then != cell.key
    grouped = dataclasses.replace(cell, recipe=dataclasses.replace(cell.recipe, group_size_at={2: 32}))
    assert grouped.keys == (grouped.key,)  # a recipe that uses the field is a measurement no old row made


def test_a_cell_does_not_evaluate_a_checkpoint_an_earlier_revision_of_its_method_made(tmp_path, monkeypatch):
    """The sweep's checkpoint cache is the one `checkpoint_for` uses: a cached fit one revision old is quantized
    again (the held-out HQQ rows of session 15 were first measured on the superseded fit)."""
    import json

    from edgeasr.bench import cell as cell_module
    from edgeasr.quant import methods

    path = tmp_path / "grid.toml"
    path.write_text('models = ["moonshine-tiny"]\nmethods = ["rtn"]\nbits = ["w8a16"]\n')
    cell = Grid.from_toml(path).cells()[0]
    monkeypatch.setattr(cell_module, "checkpoint_path", lambda _cell: tmp_path / "checkpoint")
    assert cell_module.load_engine(cell)[1]["checkpoint_cached"] is False
    assert cell_module.load_engine(cell)[1]["checkpoint_cached"] is True
    monkeypatch.setitem(methods.REVISIONS, "rtn", 2)
    assert cell_module.load_engine(cell)[1]["checkpoint_cached"] is False
    assert json.loads((tmp_path / "checkpoint" / "quant.json").read_text())["method_revision"] == 2
