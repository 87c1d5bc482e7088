#!/usr/bin/env python
"""Multi-view data loading throughput: samples/s with 0 and 2 DataLoader workers.

Reads a Human3.6M-format root with the training augmentation and prints one line per worker count.
Without ``--root`` it generates a small set into a temporary folder: the synthetic renderer
(``mvpose.data.synth.generate``, 256 x 256 images, 64 groups) by default, or with ``--source fixture``
the test fixtures' writer (blank JPEGs at the real rig's 1000 x 1000(2) sizes, 128 groups), closer to
the decoding cost of the real dataset.

    python scripts/bench_data.py                      # generate a small set, workers 0 and 2
    python scripts/bench_data.py --root data/synth_h36m --workers 0 2 4 --samples 128
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mvpose.data import build_dataset, collate  # noqa: E402


def make_dataset(folder: Path, source: str) -> tuple[Path, str]:
    """Write a small Human3.6M-format set into ``folder``; returns its root and how it was made."""
    if source in ("auto", "synth"):
        try:
            from mvpose.data.synth import generate

            summary = generate(folder / "synth", fmt="h36m", subjects=(1,), actions=(2, 3, 4, 5), frames=8, image_size=256, seed=0)
            return summary.root, "mvpose.data.synth.generate(fmt='h36m', subjects=(1,), actions=(2, 3, 4, 5), frames=8, image_size=256)"
        except (ImportError, AttributeError, TypeError) as err:
            if source == "synth":
                raise
            logging.warning("synthetic generator not usable (%s); using the test fixtures' writer", err)
    spec = importlib.util.spec_from_file_location("mvpose_test_conftest", REPO / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    root = folder / "fixture"
    conftest.write_h36m(root, "train", subjects=(1, 5), actions=(2, 3, 4, 5), subactions=(1, 2), frames=range(1, 9))
    return root, "tests/conftest.py write_h36m (blank 1000x1000 JPEGs, 128 groups)"


def bench(dataset, workers: int, batch_size: int, samples: int) -> tuple[float, float, float]:
    """(samples/s after the first batch, samples/s including worker start-up, main-process CPU ms per sample).

    The CPU time is the loading cost itself with 0 workers (it does not depend on other load on the
    machine); with workers it is only the main process's share.
    """
    n = min(samples, len(dataset))
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    cpu = time.process_time()
    start = time.perf_counter()
    first = None
    count = 0
    for batch in loader:
        count += batch["image"].shape[0]
        if first is None:
            first, first_count = time.perf_counter(), count
    end = time.perf_counter()
    cpu_ms = 1000.0 * (time.process_time() - cpu) / count
    steady = (count - first_count) / (end - first) if count > first_count else float("nan")
    return steady, count / (end - start), cpu_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="existing Human3.6M-format root (default: generate a small set)")
    parser.add_argument("--source", choices=("auto", "synth", "fixture"), default="auto", help="how to generate the set when --root is not given")
    parser.add_argument("--split", default="train")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--samples", type=int, default=96, help="multi-view samples per measurement")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--no-augment", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root, how = (args.root, f"--root {args.root}") if args.root else make_dataset(Path(tmp), args.source)
        ds = build_dataset("h36m", root, args.split, views=args.views, frame_stride=1, augment=not args.no_augment)
        print(f"data: {how}; {len(ds)} groups, {ds.num_views} views, input {ds.input_hw}, augment={ds.augment}")
        for w in args.workers:
            steady, total, cpu_ms = bench(ds, w, args.batch_size, args.samples)
            print(
                f"workers={w}: {steady:.1f} multi-view samples/s ({steady * ds.num_views:.0f} views/s); "
                f"{total:.1f}/s including start-up; main process {cpu_ms:.1f} CPU ms/sample"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
