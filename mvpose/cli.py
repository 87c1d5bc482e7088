"""The `mvpose` command line. Thin: parse options, call a library function, print the outcome.

Heavy imports (torch models, OpenCV) happen inside the commands so that `mvpose --help` is instant.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import click


class _Group(click.Group):
    """The top-level group: bad input that a command did not turn into a click error itself (a
    ``ValueError`` -- ConfigError, DatasetError, CalibrationError, UntrustedFileError are ones -- or an
    ``OSError`` such as FileNotFoundError / FileExistsError) ends as one line ``Error: MESSAGE``, exit
    status 1, instead of a traceback; ``-vv`` logs the traceback as well."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ValueError, OSError) as err:
            logging.getLogger("mvpose.cli").debug("traceback of the error below", exc_info=True)
            raise click.ClickException(str(err) or type(err).__name__) from err


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    """Camera calibration: convert between formats, calibrate intrinsics and extrinsics from a board.

    \b
    Examples:
      mvpose calibrate convert Calib.toml rig.json
      mvpose calibrate intrinsics --board checkerboard --squares 9x6 --square-size 25 --images boards/ --out intr.json
    """


class _DatasetChoice(click.Choice):
    """The registered dataset names (:data:`mvpose.data.registry.DATASETS`), read when click first
    needs them, so that ``mvpose --help`` does not import the readers."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        from mvpose.data import DATASETS

        return tuple(DATASETS)

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns it
        pass


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err)) from err


def _even(value: int, param: click.Parameter) -> int:
    if value % 2:
        raise click.BadParameter(f"must be even (a 2nd-order filter run forwards and backwards), found {value}", param=param)
    return value


def _file_stem(value: str, param: click.Parameter) -> str:
    """A file name without folders, so that outputs stay inside --out."""
    if not value or Path(value).name != value or value in (".", ".."):
        raise click.BadParameter(f"expected a file name without folders, found {value!r}", param=param)
    return value


def _int_list(text: str | None, param: click.Parameter) -> list[int] | None:
    """``"1,5, 9"`` -> [1, 5, 9]; None stays None."""
    if not text:
        return None
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated frame numbers, found {text!r}", param=param) from None


def _trust_option(fn):
    """Add ``--trust-checkpoint`` and run the command inside :func:`mvpose.safe_load.trusted_checkpoints`."""

    @functools.wraps(fn)
    def wrapper(*args, trust_checkpoint: bool = False, **kwargs):
        from mvpose.safe_load import trusted_checkpoints

        with trusted_checkpoints(trust_checkpoint):
            return fn(*args, **kwargs)

    return click.option(
        "--trust-checkpoint", is_flag=True,
        help="Load checkpoints in full even when they ask for more than tensors and plain values: this runs any "
             "code the file holds. Only for files from a source you trust.")(wrapper)


@main.command()
@click.option("--dataset", type=_DatasetChoice(), default="h36m", show_default=True, help="Dataset format.")
@click.option("--views", type=int, default=None, help="Cameras per sample (default: the pipeline's, 4).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Dataset root. Default: the synthetic demo set, generated on first use.")
@click.option("--pipeline", default=None, help="Pipeline YAML (path or name in mvpose/pipelines/). Default: <dataset>_mv_ppt_s.")
@click.option("--model", "model_name", default=None, help="Model name from the registry (overrides the pipeline's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value, e.g. train.epochs=2.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/<pipeline name>).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt exactly where it stopped.")
@click.option("--overwrite", is_flag=True, help="Start afresh in an OUT that holds a previous run (removes its "
              "checkpoints and log.csv). Without it or --resume, such an OUT is refused.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when available).")
@_trust_option
def train(dataset, views, data_root, pipeline, model_name, overrides, out, resume, overwrite, device) -> None:
    """Train a model (multi-view PPT by default) with checkpoints, CSV log and validation.

    \b
    Examples:
      mvpose train --dataset h36m --views 4
      mvpose train --pipeline demo_mv_ppt --set train.epochs=2 --out runs/try
      torchrun --nproc_per_node 2 -m mvpose train --pipeline demo_mv_ppt --device cpu
    """
    from mvpose.engine.config import apply_overrides, check_model_keys, load_pipeline
    from mvpose.engine.train import train as run_train

    # COCO is single-view: its default recipe is single-view PPT-S.
    cfg = load_pipeline(pipeline or ("coco_ppt_s" if dataset == "coco" else f"{dataset}_mv_ppt_s"))
    cfg["dataset"]["name"] = dataset if pipeline is None or dataset != "h36m" else cfg["dataset"]["name"]
    if views is not None:
        cfg["dataset"]["views"] = views
    if data_root is not None:
        cfg["dataset"]["root"] = data_root
    if model_name is not None:
        cfg["model"] = {"name": model_name}
    cfg = apply_overrides(cfg, overrides)
    check_model_keys(cfg)
    out = out or f"runs/{cfg['name']}"
    click.echo(_train_plan(cfg, paper_default=pipeline is None), err=True)
    summary = run_train(cfg, out, resume=resume, device=device, overwrite=overwrite)
    click.echo(f"best JDR {summary['best_jdr']:.4f}; checkpoints and log.csv in {summary['out_dir']}")


def _train_plan(cfg: dict, paper_default: bool) -> str:
    """What `mvpose train` is about to do: data, model, length; for the paper recipe on a CPU, the quick alternative."""
    from mvpose.data.demo import demo_root

    d, t = cfg["dataset"], cfg["train"]
    data = d.get("root") or f"the synthetic {d['name']} demo set in {demo_root(d['name'])} (generated on first use)"
    lines = [f"pipeline {cfg['name']}: model {cfg['model']['name']}, {d['views']} views at {d['image_size'][0]}x{d['image_size'][1]}, "
             f"{t['epochs']} epochs of batch {t['batch_size']}; data: {data}"]
    if paper_default:
        lines.append("This is the paper's full recipe (PPT-S): on 2 CPU cores 11-14 s per step at batch 8, about an hour on the synthetic "
                     "demo set and days on the real Human3.6M; the measured time per step is logged after the first steps. "
                     "For a run of minutes: `mvpose train --pipeline demo_mv_ppt` (tiny model, 128 px) or `mvpose demo`.")
    return "\n".join(lines)


@main.command()
@click.option("--checkpoint", "checkpoint", type=click.Path(dir_okay=False), required=True,
              help="Trained checkpoint (best.pt); always required, with --model too (the weights come from it).")
@click.option("--model", "model_name", default=None,
              help="Check that the checkpoint holds this registry model (e.g. a baseline) before evaluating.")
@click.option("--dataset", type=_DatasetChoice(), default=None, help="Dataset (default: the checkpoint's).")
@click.option("--views", type=int, default=None, help="Cameras per sample (default: the checkpoint's).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Dataset root (default: the checkpoint's).")
@click.option("--split", default="val", show_default=True, help="Split to evaluate.")
@click.option("--every", type=click.IntRange(min=1), default=None, help="Evaluate every N-th frame group (default 64, as published).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Report folder (default: the checkpoint's folder).")
@click.option("--name", default="report", show_default=True, callback=lambda ctx, p, v: _file_stem(v, p),
              help="Report file stem (OUT/NAME.json, OUT/NAME.csv).")
@click.option("--flip-test/--no-flip-test", default=None,
              help="Average with the horizontally flipped crops (single-view heatmap models; default: eval.flip_test, off).")
@click.option("--rays", type=click.Choice(["exact", "official"]), default=None,
              help="3D PE rays: exact (undistorted) or the official multi-view PPT formula (default: the checkpoint's).")
@_trust_option
def evaluate(checkpoint, model_name, dataset, views, data_root, split, every, out, name, flip_test, rays) -> None:
    """2D JDR, confidence-weighted triangulation, MPJPE per action (Human3.6M) or sequence (Ski-Pose) / joint, PA-MPJPE.

    On COCO (no 3D ground truth): JDR and keypoint AP / AR from pycocotools on the ground-truth
    boxes, no MPJPE; the COCO results are written to OUT/NAME_coco_results.json.
    Writes OUT/NAME.json and OUT/NAME.csv.

    \b
    Examples:
      mvpose evaluate --checkpoint runs/demo_mv_ppt/best.pt --dataset h36m --views 4
      mvpose evaluate --checkpoint runs/coco/best.pt --dataset coco --data-root data/coco --flip-test
    """
    from mvpose.engine.runner import evaluate_checkpoint

    try:
        report, paths = evaluate_checkpoint(checkpoint, dataset=dataset, views=views, data_root=data_root,
                                            split=split, every=every, out_dir=out, name=name, model_name=model_name,
                                            flip_test=flip_test, rays=rays)
    except KeyError as err:  # ValueError and OSError: the group turns them into "Error: ..."
        _fail(err)
    click.echo(f"{report['model']} on {report['dataset']} ({report['views']} views, {report['samples']} samples)")
    if report.get("keep_ratio") is not None:
        click.echo(f"  keep ratio {report['keep_ratio']:g}")
    click.echo(f"  JDR        {100 * report['jdr']['overall']:.2f} %  (threshold {report['jdr']['threshold_px']:.1f} px)")
    if report["jdr"].get("hidden") is not None:
        click.echo(f"    visible  {100 * report['jdr']['visible']:.2f} %   hidden in their view  {100 * report['jdr']['hidden']:.2f} %")
    if report["mpjpe_mm"] is not None:
        click.echo(f"  MPJPE      {report['mpjpe_mm']['overall']:.1f} mm")
        click.echo(f"  PA-MPJPE   {report['pa_mpjpe_mm']:.1f} mm")
        for group in ("per_action", "per_sequence"):
            for key, v in report["mpjpe_mm"].get(group, {}).items():
                click.echo(f"    {key:<14}{v:8.1f} mm")
    else:
        click.echo(f"  MPJPE      - ({report.get('note') or 'no 3D ground truth'})")
    for issue in report.get("issues", []):
        click.echo(f"  warning: {issue}")
    for key, v in (report.get("coco") or {}).items():
        click.echo(f"  {key:<10} {v:.4f}")
    if report.get("coco_results"):
        click.echo(f"COCO results: {report['coco_results']}")
    click.echo(f"reports: {paths[0]} {paths[1]}")


@main.group()
def plot() -> None:
    """Pictures: per-action MPJPE bars, kept human tokens.

    \b
    Examples:
      mvpose plot mpjpe runs/single/report.json runs/mv/report.json -o per_action.png
      mvpose plot tokens --checkpoint runs/demo_mv_ppt/best.pt -o tokens.png
    """


@plot.command("mpjpe")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", default="per_action.png", show_default=True, help="Output PNG.")
@click.option("--label", "labels", multiple=True, help="Legend label per report (default: model name from the report).")
@click.option("--title", default=None)
def plot_mpjpe(reports, out, labels, title) -> None:
    """Grouped bars of MPJPE per action for several methods (like the PPT paper's Table 5).

    \b
    Example:
      mvpose plot mpjpe runs/single/report.json runs/mv/report.json -o per_action.png
    """
    from mvpose.viz.plots import load_report, plot_mpjpe_per_action

    reps = [load_report(r) for r in reports]
    if labels and len(labels) != len(reps):
        raise click.UsageError(f"{len(labels)} --label for {len(reps)} reports")
    labels = labels or _report_labels(reps, reports)
    path = plot_mpjpe_per_action(reps, labels, out, title)
    click.echo(f"wrote {path}")


def _report_labels(reps: list[dict], paths: list[str]) -> list[str]:
    """Default legend labels: each report's ``label`` (else its model); labels that collide get the
    report's folder name appended (its path when the folders collide too)."""
    from collections import Counter

    base = [r.get("label") or r.get("model") or f"report{i}" for i, r in enumerate(reps)]
    count = Counter(base)
    labels = [f"{b} ({Path(p).parent.name or Path(p).resolve().parent.name})" if count[b] > 1 else b
              for b, p in zip(base, paths)]
    count = Counter(labels)
    return [f"{b} ({p})" if count[lab] > 1 else lab for b, p, lab in zip(base, paths, labels)]


@plot.command("tokens")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data-root", default=None, help="Dataset root (default: the checkpoint's).")
@click.option("--samples", type=click.IntRange(min=1), default=2, show_default=True, help="Number of multi-view samples to draw.")
@click.option("-o", "--out", default="tokens.png", show_default=True)
@_trust_option
def plot_tokens(checkpoint, data_root, samples, out) -> None:
    """Draw the human tokens kept in each view over the input crops (like the PPT paper's Fig. 5 and 6).

    \b
    Example:
      mvpose plot tokens --checkpoint runs/demo_mv_ppt/best.pt -o tokens.png
    """
    from mvpose.engine.runner import plot_kept_tokens

    path = plot_kept_tokens(checkpoint, out, data_root=data_root, samples=samples)
    click.echo(f"wrote {path}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the table as a JSON list (each row has 'convention').")
@click.option("--convention", type=click.Choice(["dense", "paper-code"]), default="dense", show_default=True,
              help="dense: true MACs (PPT Tables 4/6, baselines); paper-code: the official PPT get_model_summary "
                   "figure (PPT Tables 1-3).")
def flops(as_json, convention) -> None:
    """Parameters and cost of the paper configurations next to the papers' figures.

    Two counters (--convention): ``dense`` (default) counts true multiply-adds of convolutions and
    linear layers -- the convention of the multi-view figures of PPT Tables 4 and 6 and of the
    baselines; ``paper-code`` is what the official PPT code's get_model_summary prints (Conv and
    Linear hooks, a Linear on a token sequence counted as output elements x token count, / 1024^3)
    -- the convention of the single-view GFLOPs of PPT Tables 1-3 (COCO, MPII). The column
    "counter" says which one produced each paper figure; compare rows in their own counter.

    \b
    Example:
      mvpose flops
      mvpose flops --convention paper-code --json
    """
    import json as _json

    from mvpose.models.flops import flops_table

    rows = flops_table(convention)
    if as_json:
        click.echo(_json.dumps(rows, indent=1))
        return
    w = max(len(r["model"]) for r in rows) + 2
    cost = "GMACs" if convention == "dense" else "G(code)"
    click.echo(f"convention: {convention}")
    click.echo(f"{'model':<{w}}{'input':>10}{'views':>6}{'params M':>10}{'paper':>8}{cost:>9}{'paper':>8}"
               f"{'counter':>12}  source")
    for r in rows:
        fmt = lambda v, w, d: f"{v:>{w}.{d}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"  # noqa: E731
        size = "x".join(str(s) for s in r["input_size"])
        click.echo(f"{r['model']:<{w}}{size:>10}{r['views']:>6}{fmt(r['params_m'], 10, 2)}{fmt(r['paper_params_m'], 8, 1)}"
                   f"{fmt(r['gmacs'], 9, 3)}{fmt(r['paper_gmacs'], 8, 2)}{r['paper_convention']:>12}  {r['source']}")


@main.command()
@click.option("--out", default="runs/demo", show_default=True, help="Demo output folder.")
@click.option("--epochs", default=None, type=int,
              help="Epochs per method (default: 4 of fine-tuning, 75 steps each; with --from-scratch the pipelines' 6).")
@click.option("--from-scratch", is_flag=True,
              help="Train both methods from random weights (the pipelines' recipe) instead of fine-tuning the shipped "
                   "pretrained PPT.")
@click.option("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when available).")
def demo(out, epochs, from_scratch, device) -> None:
    """The whole story on the synthetic default in under 10 minutes on 2 CPU cores.

    Generates the synthetic Human3.6M-format set and its occlusion validation split if missing;
    fine-tunes single-view PPT (each view alone, then confidence-weighted DLT) and multi-view PPT
    with 3D positional encodings from the shipped pretrained tiny PPT (mvpose/weights/, sha256
    checked) with the same budget; evaluates the pretrained start and both methods on both splits
    (JDR overall / on visible / on hidden joints, MPJPE); plots per-action MPJPE, the kept tokens
    with predicted and true poses per view, and one sample's triangulated 3D skeletons.

    \b
    Examples:
      mvpose demo --out runs/demo
      mvpose demo --from-scratch --out runs/demo_scratch
    """
    from mvpose.engine.runner import run_demo

    paths = run_demo(out, epochs=epochs, device=device, from_scratch=from_scratch)
    click.echo(paths["results table"].read_text())
    click.echo("demo outputs:")
    for k, v in paths.items():
        click.echo(f"  {k:<28}{v}")


# --- commands are added below, one section per feature ---------------------------------------


@calibrate.command("convert")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--to", "to", type=click.Choice(["mvpose", "pose2sim", "opencv"]), default="mvpose", show_default=True,
              help="Output format: mvpose .json/.toml (mm), Pose2Sim .toml (m), OpenCV FileStorage .yml/.xml (mm).")
@click.option("--rig", default=None, help="Rig to take from a multi-rig file (e.g. S9 of the shipped h36m).")
@click.option("--calibration-units", type=click.Choice(["m", "cm", "mm"]), default=None,
              help="Unit of SRC's translations where the format does not fix it (Pose2Sim/anipose TOML: default the "
                   "file's `units` key, else m; OpenCV files without `units`: mm).")
def calibrate_convert(src, dst, to, rig, calibration_units) -> None:
    """Convert a calibration file and print a per-camera summary.

    The input format is detected: mvpose JSON/TOML, Pose2Sim/anipose Calib.toml, OpenCV
    FileStorage YAML/XML, Qualisys .qca.txt. See mvpose/calibration/README.md. SRC may name a
    shipped file when no such file exists here: h36m (the Human3.6M rigs S1..S11) or an example
    rig such as rig4.toml.

    \b
    Examples:
      mvpose calibrate convert Calib.toml rig.json
      mvpose calibrate convert h36m s9_calib.toml --to pose2sim --rig S9
      mvpose calibrate convert rig_mm.toml rig.json --calibration-units mm
      mvpose calibrate convert session.qca.txt rig.yml --to opencv
    """
    from mvpose.geometry.calibration import convert_calibration
    from mvpose.resources import resolve_calibration

    click.echo(convert_calibration(resolve_calibration(src), dst, to=to, rig=rig, units=calibration_units))


@main.group()
def prepare() -> None:
    """Dataset preparation from the raw downloads.

    \b
    Example:
      mvpose prepare h36m --raw /data/h36m_raw --out data/h36m --workers 8
    """


@prepare.command("h36m")
@click.option("--raw", required=True, type=click.Path(exists=True, file_okay=False),
              help="Extracted raw download (S1/MyPoseFeatures/..., S1/Videos/... per subject).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Dataset root to write (annot/, images/).")
@click.option("--subjects", multiple=True, help="Subjects, e.g. S9 or 1,5 (repeatable; default all seven).")
@click.option("--actions", default=None, help="Action ids 2..16, comma separated (default all).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Keep every N-th frame (1 = all, as published).")
@click.option("--workers", type=int, default=None, help="Video decoding processes (default min(4, cores); 0 = in-process).")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Camera file with rigs S1..S11 (default mvpose/calibration/h36m.json).")
def prepare_h36m_cmd(raw, out, subjects, actions, every, workers, calibration) -> None:
    """Human3.6M raw download -> ROOT/annot/h36m_{train,validation}.pkl and ROOT/images (H36M-Toolbox layout).

    Resumable: frames already on disk are skipped. Ends with a consistency report (2D labels vs
    projected 3D labels, CDF vs video frame counts).

    Fields as the H36M-Toolbox writes them: joints_3d from D3_Positions_mono_universal (universal
    skeleton, camera frame; D3_Positions_mono where that file is missing, with a warning),
    joints_3d_camera from D3_Positions_mono. The world pose is R^T joints_3d_camera + T.

    \b
    Example:
      mvpose prepare h36m --raw /data/h36m_raw --out data/h36m --workers 8
    """
    from mvpose.data.prepare_h36m import format_report, parse_subjects, prepare_h36m

    action_ids = [int(a) for a in actions.replace(",", " ").split()] if actions else None
    report = prepare_h36m(raw, out, subjects=parse_subjects(subjects) or None, actions=action_ids, every=every,
                          workers=workers, calibration=calibration)
    click.echo(format_report(report))


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--format", "fmt", type=click.Choice(["h36m", "skipose"]), default="h36m", show_default=True,
              help="On-disk layout: Human3.6M (H36M-Toolbox) or Ski-Pose (Ski-PosePTZ-CameraDataset).")
@click.option("--subjects", default=None, help="Subject ids, comma separated (h36m default 1,5,6,7,8,9,11; skipose 1..6).")
@click.option("--actions", default=None, help="Human3.6M action ids 2..16, comma separated (default all 15).")
@click.option("--frames", type=int, default=None, help="Frames per sequence and camera (default 4 h36m, 8 skipose).")
@click.option("--image-size", type=int, default=256, show_default=True, help="Image side (Ski-Pose: always 256).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--preview", is_flag=True, help="Also write OUT/preview.png (views x frames with the skeleton).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Processes (0 = all CPU cores).")
@click.option("--occlusion", is_flag=True,
              help="Human3.6M: in every frame an object between 1-2 of the 4 cameras and the person hides limbs "
                   "(the same sequences as without it, plus the objects; hidden joints marked in joints_vis).")
def synth(out, fmt, subjects, actions, frames, image_size, seed, preview, workers, occlusion) -> None:
    """Render the synthetic multi-view dataset (the embedded default) in a published layout.

    \b
    Examples:
      mvpose synth --out data/synth_h36m --format h36m --preview
      mvpose synth --out data/synth_h36m_occl --occlusion   # occlusion set: S9/S11 the occlusion split
    """
    from mvpose.data.synth import generate

    def ids(text, name):
        try:
            return tuple(int(v) for v in text.replace(",", " ").split()) if text else None
        except ValueError:
            raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=name) from None

    try:
        summary = generate(out, fmt=fmt, subjects=ids(subjects, "--subjects"), actions=ids(actions, "--actions"),
                           frames=frames, image_size=image_size, seed=seed, workers=workers or None, preview=preview,
                           occlusion=occlusion)
    except KeyError as err:  # OSError: the group turns it into "Error: ..."
        _fail(err)
    except ValueError as err:  # generate() names its parameters; the user typed the options
        text = str(err)
        name = text.split(":", 1)[0]
        if name in ("subjects", "actions", "frames", "image_size"):
            text = "--" + name.replace("_", "-") + text[len(name):]
        raise ValueError(text) from None
    click.echo(f"{summary.images} images ({summary.sequences} sequences) in {summary.seconds:.1f} s "
               f"({summary.images_per_second:.0f} images/s), {summary.bytes / 1e6:.1f} MB -> {summary.root}")
    if summary.preview is not None:
        click.echo(f"preview: {summary.preview}")


# --- capture pipeline: mvpose triangulate, mvpose calibrate intrinsics / extrinsics ---------------
@main.command("triangulate")
@click.option("--calibration", required=True, type=click.Path(dir_okay=False),
              help="Calibration file (mvpose, Pose2Sim, OpenCV or Qualisys), or a shipped one by name (h36m, "
                   "rig4.toml); camera names name the inputs.")
@click.option("--rig", default=None, help="Rig to take from a multi-rig calibration file.")
@click.option("--calibration-units", type=click.Choice(["m", "cm", "mm"]), default=None,
              help="Unit of the calibration's translations where the format does not fix it (Pose2Sim/anipose "
                   "TOML: default the file's `units` key, else m; anipose uses its board's square-size unit, "
                   "often mm; OpenCV files without `units`: mm).")
@click.option("--keypoints", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder with one entry per camera: an OpenPose JSON folder or a COCO results .json.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="mvpose model checkpoint (from `mvpose train`; single-view or multi-view PPT) that detects the "
                   "2D joints in --videos/--images, in person crops tracked from frame to frame.")
@click.option("--boxes", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --checkpoint: folder of person boxes per camera, CAMERA.csv (frame,x0,y0,x1,y1) or "
                   "CAMERA.json (default: boxes tracked by reprojecting the previous frames' 3D pose).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --checkpoint: frames (all views of each) per forward pass.")
@click.option("--device", default="cpu", show_default=True, help="With --checkpoint: torch device (cpu, cuda, cuda:N).")
@click.option("--videos", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder with one video per camera (for --checkpoint and --render; also gives the frame rate).")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder with one image folder per camera (for --checkpoint and --render).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--joints", type=click.Choice(["body25", "body25b", "coco", "halpe26", "h36m"]), default=None,
              help="Joint set of the keypoints (default: from the count, 17 reads as COCO, 25 as BODY_25, and the report "
                   "names h36m / body25b (OpenPose BODY_25B, Pose2Sim's default) when the bones fit it better; with "
                   "--checkpoint: from the model's training data).")
@click.option("--offsets", default=None, metavar="CAM=N,...",
              help="Frame offsets: capture frame i uses frame i+N of camera CAM.")
@click.option("--mode", type=click.Choice(["drop_worst", "ransac", "dlt"]), default="drop_worst", show_default=True,
              help="Robust view exclusion, or plain weighted DLT.")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Reprojection error (px) above which a view of a joint is excluded.")
@click.option("--min-confidence", type=float, default=0.3, show_default=True, help="Keypoints below it are ignored.")
@click.option("--min-views", type=click.IntRange(min=2), default=2, show_default=True, help="Views a joint needs.")
@click.option("--refine/--no-refine", default=False, show_default=True, help="Levenberg-Marquardt refinement.")
@click.option("--reject-unresolved", is_flag=True,
              help="Robust modes: leave a joint missing in a frame when a view it kept is still more than --threshold px "
                   "off after dropping views down to --min-views (Pose2Sim's behaviour; --max-gap can fill it). "
                   "Default: keep such points; the report counts them either way.")
@click.option("--max-gap", type=click.IntRange(min=0), default=0, show_default=True, help="Fill gaps of at most N frames (0: off).")
@click.option("--cutoff", type=float, default=None, help="Zero-phase Butterworth low-pass cut-off in Hz (default off).")
@click.option("--order", type=click.IntRange(min=2), default=4, show_default=True, callback=lambda ctx, p, v: _even(v, p),
              help="Order of the zero-phase filter (even).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None, help="Frame rate (default: read from --videos).")
@click.option("--render", is_flag=True, help="Overlays per camera and a 3D skeleton plot in OUT/render.")
@click.option("--plot-frames", default=None, metavar="F,...", callback=lambda ctx, p, v: _int_list(v, p),
              help="Frames of the 3D plot (default: four spread out).")
@click.option("--render-every", type=click.IntRange(min=1), default=1, show_default=True, help="Overlay every N-th frame.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Processes for reading and rendering, threads decoding videos (default: CPU count).")
@click.option("--people", default="1", show_default=True, metavar="N|auto",
              help="People in the capture: 1 keeps the one whose detections agree across views; N > 1 or auto "
                   "associates the detections of all views into at most N people (auto: as many as found), tracks "
                   "them over time and writes one TRC per person.")
@click.option("--track-distance", type=click.FloatRange(min=0, min_open=True), default=500.0, show_default=True,
              help="With --people: largest median joint distance (mm) to link a person to the previous frames' track.")
@_trust_option
def triangulate_cmd(calibration, rig, calibration_units, keypoints, checkpoint, boxes, batch_size, device, videos, images, out, joints,
                    offsets, mode, threshold, min_confidence, min_views, refine, reject_unresolved, max_gap, cutoff, order, fps, render,
                    plot_frames, render_every, workers, people, track_distance) -> None:
    """3D joints from a recorded multi-camera capture: OUT/poses3d.h5, poses3d.trc, summary.json, report.txt.

    Each input folder holds one entry per camera, named as the calibration's cameras; frames are
    synchronised by index (shift a camera with --offsets). For single-person captures: when a frame
    has several people, the one whose keypoints agree across views is used. With --people N or auto,
    every person is triangulated and tracked: OUT/poses3d.h5 gets a person axis, OUT/poses3d_personK.trc
    one file per person, summary.json and report.txt a section per person.

    The 2D joints come from --keypoints (files of another detector) or from --checkpoint (an mvpose
    model run on --videos or --images: per view a person crop from --boxes, else from the previous
    frames' 3D pose reprojected, started by a pass over the whole frame; also writes
    OUT/detection.json and OUT/boxes/CAMERA.csv).

    \b
    Examples:
      mvpose triangulate --calibration rig.toml --keypoints openpose_json/ --out out/ \\
          --max-gap 10 --cutoff 6 --fps 60 --render
      mvpose triangulate --calibration rig.toml --checkpoint best.pt --videos videos/ --out out/ \\
          --batch-size 8 --device cuda --max-gap 10 --cutoff 6
      mvpose triangulate --calibration rig.toml --keypoints openpose_json/ --out out/ --people auto
    """
    from mvpose.capture.pipeline import CaptureOptions, parse_offsets, run_capture

    if (keypoints is None) == (checkpoint is None):
        raise click.UsageError("give exactly one of --keypoints DIR or --checkpoint FILE")
    if videos is not None and images is not None:
        raise click.UsageError("give --videos or --images, not both")
    if checkpoint is not None and videos is None and images is None:
        raise click.UsageError("--checkpoint needs the frames: give --videos DIR or --images DIR")
    if checkpoint is None and (boxes is not None or batch_size != 8 or device != "cpu"):
        raise click.UsageError("--boxes, --batch-size and --device go with --checkpoint")
    for option, folder in (("--keypoints", keypoints), ("--videos", videos), ("--images", images)):
        if folder is not None and Path(folder).resolve() in (Path(out).resolve(), *Path(out).resolve().parents):
            raise click.UsageError(f"--out {out} is inside {option} {folder}: its outputs would be read as a camera "
                                   "the next time; write them elsewhere")
    from mvpose.resources import resolve_calibration

    calibration = str(resolve_calibration(calibration))
    options = CaptureOptions(joints=joints, calibration_units=calibration_units, mode=mode, threshold_px=threshold, min_confidence=min_confidence,
                             min_views=min_views, refine=refine, reject_unresolved=reject_unresolved, max_gap=max_gap, cutoff_hz=cutoff,
                             filter_order=order, fps=fps, offsets=parse_offsets(offsets), workers=workers)
    frames = plot_frames
    detect = None
    if checkpoint is not None:
        from mvpose.capture.detect import DetectOptions

        detect = DetectOptions(checkpoint, boxes=boxes, batch_size=batch_size, device=device)
    if people.strip() == "1":
        result = run_capture(calibration, keypoints, out, options, detect=detect, rig=rig, videos=videos,
                             images=images, render=render, plot_frames=frames, render_every=render_every)
    else:
        from mvpose.capture.multi import PeopleOptions, parse_people, run_people_capture

        result = run_people_capture(calibration, keypoints, out, options,
                                    PeopleOptions(parse_people(people), max_distance_mm=track_distance),
                                    detect=detect, rig=rig, videos=videos, images=images, render=render,
                                    plot_frames=frames, render_every=render_every)
    click.echo(result.paths["report"].read_text(), nl=False)
    detection = result.capture.detection
    for who, det in (detection.items() if isinstance(detection, dict) else [("", detection)]):
        if det is None:
            continue
        info = det.info
        click.echo(f"2D joints{' of person ' + who if who else ''}: {info['model']} on {info['frames']} frames at "
                   f"{info['frames_per_s']:.1f} frames/s; {info['whole_frame_passes']} whole-frame pass(es); "
                   f"boxes per camera {info['boxes']}")
    click.echo("wrote " + " ".join(str(p) for p in result.paths.values()))


def _board_options(fn):
    options = [
        click.option("--board", "kind", type=click.Choice(["checkerboard", "charuco"]), required=True, help="Board type."),
        click.option("--squares", required=True, metavar="COLSxROWS", help="Squares of the board, e.g. 9x6."),
        click.option("--square-size", type=float, required=True, help="Square side in mm."),
        click.option("--marker-size", type=float, default=None, help="ArUco marker side in mm (ChArUco)."),
        click.option("--dictionary", default="DICT_4X4_50", show_default=True, help="ArUco dictionary (ChArUco)."),
        click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Folder of images, or one image folder per camera."),
        click.option("--videos", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Folder with one video per camera."),
        click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Use every N-th frame."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _board(kind, squares, square_size, marker_size, dictionary, images, videos):
    from mvpose.geometry.board_calibration import Board

    if (images is None) == (videos is None):
        raise click.UsageError("give exactly one of --images DIR or --videos DIR")
    try:
        cols, rows = (int(v) for v in squares.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected COLSxROWS such as 9x6, got {squares!r}", param_hint="--squares") from None
    return Board(kind, (cols, rows), square_size, marker_size, dictionary), images or videos


@calibrate.command("intrinsics")
@_board_options
@click.option("--max-views", type=int, default=40, show_default=True, help="Views used per camera at most.")
@click.option("--fix-k3", is_flag=True, help="Keep k3 = 0 (narrow lenses, few views).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="mvpose calibration .json/.toml to write.")
def calibrate_intrinsics_cmd(kind, squares, square_size, marker_size, dictionary, images, videos, every, max_views,
                             fix_k3, out) -> None:
    """Intrinsics (K, distortion) per camera from views of a board; prints the RMS error.

    Writes an mvpose calibration with identity poses (intrinsics only): give it to
    `mvpose calibrate extrinsics --intrinsics`.

    \b
    Example:
      mvpose calibrate intrinsics --board checkerboard --squares 9x6 --square-size 40 \\
          --videos intrinsics_videos/ --every 10 --out intrinsics.json
    """
    from mvpose.geometry.board_calibration import format_intrinsics, intrinsics_from_folder
    from mvpose.geometry.calibration import write_mvpose_calibration

    board, folder = _board(kind, squares, square_size, marker_size, dictionary, images, videos)
    results = intrinsics_from_folder(folder, board, every=every, max_views=max_views, fix_k3=fix_k3, progress=True)
    write_mvpose_calibration(out, [r.params() for r in results])
    click.echo(format_intrinsics(results))
    click.echo(f"wrote {out}")


@calibrate.command("extrinsics")
@_board_options
@click.option("--intrinsics", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Calibration file with each camera's K and distortion (e.g. from `calibrate intrinsics`).")
@click.option("--reference", default=None, help="Camera the chain starts from (default: best connected).")
@click.option("--world", type=click.Choice(["camera", "board"]), default="camera", show_default=True,
              help="World frame: the reference camera's, or the board's (z up out of its face).")
@click.option("--origin-frame", type=int, default=None, help="Frame whose board pose is the world (--world board).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="mvpose calibration .json/.toml to write.")
def calibrate_extrinsics_cmd(kind, squares, square_size, marker_size, dictionary, images, videos, every, intrinsics,
                             reference, world, origin_frame, out) -> None:
    """Camera poses from a board seen by the cameras at the same time (at least pairwise, chained).

    Inputs are synchronised: the same frame number is the same instant in every camera.

    \b
    Example:
      mvpose calibrate extrinsics --board charuco --squares 7x5 --square-size 80 --marker-size 60 \\
          --intrinsics intrinsics.json --videos extrinsics_videos/ --world board --out rig.toml
    """
    from mvpose.geometry.board_calibration import extrinsics_from_folder, format_extrinsics
    from mvpose.geometry.calibration import calibration_summary, write_mvpose_calibration

    board, folder = _board(kind, squares, square_size, marker_size, dictionary, images, videos)
    result = extrinsics_from_folder(folder, intrinsics, board, every=every, reference=reference, world=world,
                                    origin_frame=origin_frame, progress=True)
    write_mvpose_calibration(out, result.params)
    click.echo(format_extrinsics(result))
    click.echo(calibration_summary(result.params))
    click.echo(f"wrote {out}")


@main.group("checkpoint")
def checkpoint_group() -> None:
    """Checkpoint maintenance.

    \b
    Example:
      mvpose checkpoint upgrade runs/old/best.pt runs/old/best_plain.pt
    """


@checkpoint_group.command("upgrade")
@click.argument("old", type=click.Path(exists=True, dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@_trust_option
def checkpoint_upgrade(old, new) -> None:
    """Rewrite a checkpoint of an older mvpose version in plain form (tensors, lists, numbers), so that it
    loads with torch.load(weights_only=True) alone. OLD is read allowing only numpy arrays / scalars
    besides tensors (what older mvpose versions stored) unless --trust-checkpoint.

    \b
    Example:
      mvpose checkpoint upgrade runs/old/best.pt runs/old/best_plain.pt
    """
    from mvpose.engine.checkpoint import upgrade_checkpoint

    try:
        ckpt = upgrade_checkpoint(old, new)
    except TypeError as err:  # ValueError and OSError: the group turns them into "Error: ..."
        _fail(err)
    click.echo(f"wrote {new} ({len(ckpt['model'])} tensors, model {ckpt['config'].get('model', {}).get('name', '?')})")


# --- convert-weights: official PPT / TokenPose checkpoints -> mvpose ---------------------------------------


@main.command("convert-weights")
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--keep-ratio", type=float, default=None,
              help="HTI keep ratio of the converted model (default: 0.7 for PPT and multi-view files, judged by the "
                   "file name containing 'ppt', else 1 = TokenPose).")
@click.option("--patch-size", type=int, nargs=2, default=None, metavar="PH PW",
              help="Patch size on the stride-4 features (default: (4, 3) / (4, 4) from the weights).")
@click.option("--heads", type=int, default=8, show_default=True, help="Attention heads (not stored in the weights).")
def convert_weights(src, dst, keep_ratio, patch_size, heads) -> None:
    """Convert a checkpoint of the official PPT / TokenPose code (github HowieMa/PPT) to mvpose.

    SRC: a .pth of the official code (plain state dict, or under 'state_dict' / 'model', with or without
    DataParallel's 'module.'), read with torch.load(weights_only=True). The architecture is recognised
    from its keys and shapes: TokenPose/PPT-S (stem), -B (HRNet-W32), -L/D6 (HRNet-W48), 256x192 or
    256x256, 16 or 17 joints, or the multi-view PPT with its 3D positional encoding. DST is an mvpose
    checkpoint for `mvpose evaluate`, `mvpose plot tokens`, `mvpose triangulate --checkpoint` and
    `mvpose train --set model.pretrained=DST` (which also takes SRC directly).

    \b
    Example:
      mvpose convert-weights ppt_s_256x192_ratio07.pth runs/ppt_s_coco.pt
      mvpose evaluate --checkpoint runs/ppt_s_coco.pt --dataset coco --data-root data/coco
    """
    from mvpose.models.convert import convert_file

    record = convert_file(src, dst, keep_ratio=keep_ratio, patch_size=tuple(patch_size) if patch_size else None,
                          heads=heads)
    click.echo(f"{src}: {record['architecture']} ({record['dataset']}) -> {dst} (model {record['model']}, "
               f"keep ratio {record['keep_ratio']:g})")
