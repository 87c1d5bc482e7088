#!/usr/bin/env python
"""Put a trained checkpoint into the package as shipped weights (``mvpose/weights/NAME.pt``).

Keeps what inference and fine-tuning read (the ``model`` state dict in float32, the ``config``, the
epoch and step counters and the best validation JDR) and drops the optimizer and random states, so
the file is a third of ``last.pt``. Copies the run's ``log.csv`` to ``mvpose/weights/NAME_log.csv``
and prints the sha256 to record in ``mvpose.resources.SHIPPED_WEIGHTS`` (loads are checked against it).

Example:
  python scripts/ship_weights.py /work/runs/pretrain_tiny/last.pt --name ppt_tiny_synth
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from mvpose.engine.checkpoint import atomic_save, load_checkpoint
from mvpose.resources import resource_path, sha256_of

log = logging.getLogger("ship_weights")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="A checkpoint written by `mvpose train` (last.pt / best.pt).")
    ap.add_argument("--name", required=True, help="Name of the shipped weights (file NAME.pt).")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ckpt = load_checkpoint(args.checkpoint)
    # Where the training data lay on the machine that trained it means nothing elsewhere.
    ckpt["config"]["dataset"]["root"] = None
    slim = {
        "model": {k: v.detach().to(torch.float32).contiguous() if v.is_floating_point() else v for k, v in ckpt["model"].items()},
        "config": ckpt["config"],
        "epoch": ckpt.get("epoch"),
        "step": ckpt.get("step"),
        "best_jdr": ckpt.get("best_jdr"),
    }
    out = resource_path("weights") / f"{args.name}.pt"
    atomic_save(slim, out)
    run_log = args.checkpoint.parent / "log.csv"
    if run_log.is_file():
        shutil.copyfile(run_log, out.with_name(f"{args.name}_log.csv"))
    log.info("%s: %d bytes, epoch %s, step %s", out, out.stat().st_size, (slim["epoch"] or 0) + 1, slim["step"])
    log.info('SHIPPED_WEIGHTS entry: "%s": ("%s", "%s"),', args.name, out.name, sha256_of(out))


if __name__ == "__main__":
    main()
