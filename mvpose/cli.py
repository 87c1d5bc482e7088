"""The `mvpose` command line. Thin: parse options, call a library function, print the outcome.

Heavy imports (torch models, OpenCV) happen inside the commands so that `mvpose --help` is instant.
"""

from __future__ import annotations

import logging

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="mvpose")
def main(verbose: int) -> None:
    """mvpose: multi-view 3D human pose estimation.

    \b
    Typical session:
      mvpose synth --out data/synth_h36m --format h36m      # embedded synthetic default
      mvpose train --dataset h36m --views 4                 # multi-view PPT
      mvpose evaluate --checkpoint runs/NAME/best.pt --dataset h36m --views 4
      mvpose plot mpjpe runs/*/report.json -o per_action.png
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.group()
def calibrate() -> None:
    """Camera calibration: convert between formats (and, later, calibrate from boards)."""


# --- commands are added below, one section per feature ---------------------------------------
