"""Tests of mvpose.models.flops: the MAC counter and the comparison with paper 001."""

from __future__ import annotations

import pytest
import torch

from mvpose.models import build_model
from mvpose.models.blocks import TransformerBlock
from mvpose.models.flops import KNOWN_DISCREPANCIES, count_macs, count_params, flops_table


def test_count_macs_of_one_block_matches_closed_form():
    """Linear layers: N*(4 D^2 + 2 D*M); attention: Q.K^T and A.V, 2 N^2 D (SDPA on CPU)."""
    n, d, m = 10, 32, 64
    block = TransformerBlock(d, heads=4, mlp_ratio=m / d)
    macs = count_macs(block, torch.randn(1, n, d))
    assert macs["dense"] == n * (4 * d * d + 2 * d * m)
    assert macs["attention"] == 2 * n * n * d
    assert macs["total"] == macs["dense"] + macs["attention"]
    with torch.device("meta"):  # shapes only, same count
        meta_block = TransformerBlock(d, heads=4, mlp_ratio=m / d)
        assert count_macs(meta_block, torch.empty(1, n, d)) == macs


def test_count_macs_sees_the_pruned_tokens():
    model = build_model("ppt_tiny").eval()
    x = torch.randn(1, 3, 128, 128)
    pruned = count_macs(model, x)
    full = count_macs(model, x, keep_ratio=1.0)
    assert pruned["dense"] < full["dense"] and pruned["attention"] < full["attention"]
    assert count_params(model) == sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def table() -> list[dict]:
    return flops_table()


def test_flops_table_columns(table):
    keys = {"model", "input_size", "views", "params_m", "gmacs", "paper_params_m", "paper_gmacs"}
    assert table and all(keys <= set(row) for row in table)
    names = {(r["model"], tuple(r["input_size"]), r["views"]) for r in table}
    assert ("TokenPose-S", (256, 192), 1) in names
    assert ("PPT-S", (256, 192), 1) in names
    assert ("Multi-view PPT", (256, 256), 4) in names


def test_flops_table_within_5_percent_of_the_paper(table):
    checked = 0
    for row in table:
        if row["paper_params_m"] is not None:
            assert row["params_m"] == pytest.approx(row["paper_params_m"], rel=0.05), row
            checked += 1
        if row["paper_gmacs"] is not None and (row["model"], row["source"]) not in KNOWN_DISCREPANCIES:
            assert row["gmacs"] == pytest.approx(row["paper_gmacs"], rel=0.05), row
            checked += 1
    assert checked >= 11
    mv4 = next(r for r in table if r["model"] == "Multi-view PPT" and r["views"] == 4)
    assert mv4["gmacs"] == pytest.approx(9.7, rel=0.05)


def test_known_discrepancies_are_real_and_explained(table):
    """Rows excused from the 5% check must really miss it and carry the explanation."""
    rows = {(r["model"], r["source"]): r for r in table}
    assert set(KNOWN_DISCREPANCIES) <= set(rows)
    for key, reason in KNOWN_DISCREPANCIES.items():
        row = rows[key]
        assert row["note"] == reason and reason
        assert abs(row["gmacs"] / row["paper_gmacs"] - 1) > 0.05, row
        # Counting the attention products too only moves further from these figures.
        assert row["total_gmacs"] > row["gmacs"] > row["paper_gmacs"]
