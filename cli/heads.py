"""``tlx fit-head``, ``tlx runs`` and ``tlx heads``: stage two (the heads, and scikit-learn, are
imported inside the command bodies)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from .common import JsonOpt, QuietOpt, emit_json, fmt, handle_errors, info, print_table, report

HELP = {
    "features": "Feature cache file written by `tlx extract`, or a folder of caches [default: the most recent cache "
    "in $TLX_CACHE_DIR or ./tlx-cache]. Repeat it to fit on the concatenation of several caches of the same images "
    "(matched by content, each block standardized).",
    "clf": "Head: linear (default: tlx's softmax regression), or scikit-learn's own logreg, ridge, knn, svm, rf, "
    "mlp, or any scikit-learn classifier as sklearn:<ClassName> (`tlx heads` lists them; linear ones export); "
    "several separated by commas, or all: each is fitted on one load of the cache, into its own run folder, "
    "and ranked.",
    "param": "Head hyper-parameter KEY=VALUE (repeatable), e.g. --param C=0.1.",
    "sweep": "Search the head's main regularization parameter over a log grid (half-decade steps), chosen by "
    "--select-on, then refit on all of train with the best value.",
    "select_on": "How --sweep and the ranking of several heads choose: cv, k-fold cross-validation on the training "
    "images (the val and test scores stay honest); val, on the val labels (the val score is then optimistic).",
    "class_weight": "Weight classes inversely to their frequency (imbalanced data).",
    "val_fraction": "Validation fraction of the seeded split (used only when the data has no split of its own: "
    "train/ + val/ or test/ folders are used as they are).",
    "seed": "Seed of that split (and of the sweep's folds).",
    "out": "Run folder to create [default: $TLX_RUNS_DIR or ./runs, then <time>-<clf>].",
    "max_memory": "Memory the training rows may take, e.g. 2GB; above it the linear head streams the cache "
    "from disk block by block [default: half the available memory].",
    "views": "Also train on views 1..N of each training image (a cache made with `tlx extract --views K`), "
    "or all of them; validation uses the center rows of val images only. [default: 0, no views]",
    "exclude": "Leave these images out of train and val: the audit.json of `tlx audit` (its exclude list), a JSON "
    "list of paths, or a text file of one path per line (repeatable); recorded in metrics.json.",
    "dir": "Folder holding run folders [default: $TLX_RUNS_DIR or ./runs].",
    "dataset": "Only runs on this dataset: its name or folder, or the cache file (or its name).",
    "sort": "accuracy or balanced: best first within each dataset; n_val: most validation images first; "
    "created: newest first.",
    "show": "Show one run instead: its scores, the class pairs it confuses most, its files.",
}


@handle_errors
def fit_head_command(
    ctx: typer.Context,
    features: Annotated[list[Path] | None, typer.Option(help=HELP["features"])] = None,
    clf: Annotated[str, typer.Option(help=HELP["clf"])] = "linear",
    params: Annotated[list[str] | None, typer.Option("--param", help=HELP["param"], metavar="KEY=VALUE")] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help=HELP["sweep"])] = False,
    select_on: Annotated[Literal["cv", "val"], typer.Option(help=HELP["select_on"])] = "cv",
    class_weight: Annotated[Literal["balanced"] | None, typer.Option(help=HELP["class_weight"])] = None,
    val_fraction: Annotated[float, typer.Option(help=HELP["val_fraction"])] = 0.2,
    seed: Annotated[int, typer.Option(help=HELP["seed"])] = 0,
    out: Annotated[Path | None, typer.Option(help=HELP["out"], file_okay=False)] = None,
    max_memory: Annotated[str | None, typer.Option(help=HELP["max_memory"])] = None,
    views: Annotated[str | None, typer.Option(help=HELP["views"], metavar="N|all")] = None,
    exclude: Annotated[list[Path] | None, typer.Option(help=HELP["exclude"], exists=True, dir_okay=False)] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Fit classifier heads on cached features and write a run folder for each (head, metrics, plots)."""
    from ..heads.training.fit import fit_heads

    # The other options are fit_heads()'s keywords, by the same names.
    options = {k: v for k, v in ctx.params.items() if k not in ("features", "views", "quiet", "json_out")}
    results = fit_heads(
        features=(features[0] if len(features) == 1 else list(features)) if features else None,
        views=_parse_views(views),
        log=lambda msg: info(msg, quiet),
        **options,
    )
    if len(results) > 1:
        report(leaderboard(results), [r.to_dict() for r in results], json_out, quiet)
    else:
        report(summary_line(results[0]), results[0].to_dict(), json_out, quiet)


def summary_line(result) -> str:
    """One head's result: its held-out scores (val, test), what the sweep chose and how."""
    m = result.metrics
    set_params = _param_list(m["params_set"])
    side = m.get("evaluated_on", "val")
    accuracy = result.val_accuracy if side == "val" else m.get("test_accuracy")
    summary = (
        f"{result.run}: {result.clf}{f' ({set_params})' if set_params else ''} {side} accuracy {accuracy:.4f} "
        f"(balanced {m['balanced_accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}) "
        f"on {m[f'n_{side}']} {side} / {m['n_train']} train images"
    )
    if side == "val" and m.get("n_test"):
        summary += f"; test accuracy {m['test_accuracy']:.4f} on {m['n_test']} test images"
    summary += f"; fit {result.fit_seconds:.2f} s"
    if m.get("views"):
        summary += f"; + {m['views']['n_rows']} view rows ({m['views']['per_image']} {m['views']['recipe']} per image)"
    if m.get("sweep"):
        s = m["sweep"]
        summary += f"; sweep chose {s['param']}={s['best']:g} ({s['selection']}, {m['sweep_seconds']:.1f} s)"
        if m.get("cv_accuracy") is not None:
            summary += f", CV accuracy {m['cv_accuracy']:.4f}"
        if (m.get("selection") or {}).get("optimistic"):
            summary += "; the val score is optimistic: the value was chosen on the val labels"
    return summary


def _param_list(params: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _parse_views(views: str | None) -> int | None:
    """``--views``: a count, ``all`` (None: every view the cache holds), or the default."""
    from ..heads.training.fit import DEFAULT_VIEWS

    if views is None:
        return DEFAULT_VIEWS
    if views == "all":
        return None
    if views.isdigit():
        return int(views)
    raise typer.BadParameter(f"expected a number of views (0, 1, 2...) or all, not {views!r}", param_hint="--views")


def show_run(run: Path, json_out: bool) -> None:
    """One run: what it is, its scores, the most confused class pairs (computed from the confusion
    matrix for runs written before ``most_confused`` was recorded), its files."""
    from ..common.mistakes import most_confused
    from ..common.runfolder import read_metrics

    metrics = read_metrics(run)
    pairs = metrics.get("most_confused")
    if pairs is None:
        pairs = most_confused(metrics.get("confusion_matrix") or [], metrics.get("classes") or [])
    files = sorted(p.name for p in Path(run).iterdir() if p.is_file())
    if json_out:
        emit_json({"run": str(run), "most_confused": pairs, "files": files, **metrics})
        return
    side = metrics.get("evaluated_on", "val")  # a train + test dataset has no val: test is shown
    line = (
        f"{run}: {metrics['kind']} {metrics.get('clf')} on {metrics.get('dataset') or '-'}, {side} accuracy "
        f"{fmt(metrics.get(f'{side}_accuracy'), '.4f')} (balanced {fmt(metrics.get('balanced_accuracy'), '.4f')}) "
        f"on {metrics.get(f'n_{side}')} {side} / {metrics.get('n_train')} train images"
    )
    if side == "val" and metrics.get("n_test"):
        line += f"; test accuracy {fmt(metrics.get('test_accuracy'), '.4f')} on {metrics['n_test']} test images"
    typer.echo(line)
    typer.echo("most confused (true -> predicted: count):" if pairs else "no confusions on the validation images")
    for p in pairs:
        typer.echo(f"  {p['true']} -> {p['predicted']}: {p['count']}")
    typer.echo(f"files: {', '.join(files)}")


def leaderboard(results) -> str:
    """The fitted heads in 80 columns, ranked by the selection's score (CV accuracy on the training
    images; val accuracy with --select-on val), with the parameters they were fitted with."""
    on_val = bool((results[0].metrics.get("selection") or {}).get("optimistic"))

    def rank_key(r):
        score = r.val_accuracy if on_val else r.cv_accuracy
        return -(score if score is not None else -1.0)

    ranked = sorted(results, key=rank_key)  # stable: ties keep the order the heads were asked in
    lines = [f"{'head':<7} {'params':<29} {'cv acc':>6} {'val acc':>7} {'test acc':>8} {'fit s':>7}"]
    for r in ranked:
        chosen = dict(r.metrics.get("params_set") or {})
        if r.metrics.get("sweep"):
            chosen[r.metrics["sweep"]["param"]] = r.metrics["sweep"]["best"]
        params = _param_list(chosen) or "defaults"
        params = params if len(params) <= 29 else params[:28] + "~"
        lines.append(
            f"{r.clf:<7} {params:<29} {fmt(r.cv_accuracy, '6.4f'):>6} {fmt(r.val_accuracy, '7.4f'):>7} "
            f"{fmt(r.test_accuracy, '8.4f'):>8} {r.fit_seconds:7.2f}"
        )
    first = ranked[0].metrics
    how = (
        "ranked by val accuracy (--select-on val: the top val score is optimistic)"
        if on_val
        else f"ranked by {first['selection']['folds']}-fold CV accuracy on train"
    )
    test = f" / {first['n_test']} test" if first.get("n_test") else ""
    lines.append(f"{len(results)} heads, {how}")
    lines.append(f"on {first['n_val']} val{test} / {first['n_train']} train images; run folders:")
    lines += [f"  {r.clf}: {r.run}" for r in ranked]
    return "\n".join(lines)


HEAD_FLAGS = {"default": "default", "exportable": "exportable", "class_weight": "--class-weight"}


@handle_errors
def heads_command(json_out: JsonOpt = False) -> None:
    """List the heads for --clf: their parameters for --param with defaults and valid values,
    the grid --sweep searches, and whether they export and take --class-weight."""
    from ..heads.registry import describe_heads, family_help
    from ..heads.training.sweep import densify

    rows = describe_heads()
    if json_out:
        emit_json(rows)
        return
    for i, h in enumerate(rows):
        flags = ", ".join(shown for key, shown in HEAD_FLAGS.items() if h[key])
        typer.echo(("\n" if i else "") + f"{h['name']}: {h['description']}" + (f" [{flags}]" if flags else ""))
        grid = densify(h["sweep_grid"])
        typer.echo(f"  --sweep searches {h['sweep_param']} over {', '.join(f'{v:g}' for v in grid)}")
        settings = [f"{p['name']}={_param_text(p['default'])}" for p in h["params"]]
        width = max(map(len, settings))
        for setting, p in zip(settings, h["params"], strict=True):
            typer.echo(f"  --param {setting.ljust(width)}  {p['valid']}".rstrip())
    for pattern, text in family_help().items():
        typer.echo(f"\n{pattern}: {text}")


def _param_text(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


@handle_errors
def runs_command(
    runs_dir: Annotated[Path | None, typer.Option("--dir", help=HELP["dir"], file_okay=False)] = None,
    dataset: Annotated[str | None, typer.Option(help=HELP["dataset"])] = None,
    sort: Annotated[Literal["accuracy", "balanced", "n_val", "created"], typer.Option(help=HELP["sort"])] = "accuracy",
    show: Annotated[Path | None, typer.Option(help=HELP["show"])] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the runs (heads and fine-tunings) with their dataset and validation size, best
    validation accuracy first within each dataset; unfinished fine-tunings show as interrupted."""
    from ..common.runfolder import default_runs_dir, list_runs

    if show is not None:
        show_run(show, json_out)
        return
    root = runs_dir if runs_dir is not None else default_runs_dir()
    rows = [_row(r) for r in list_runs(root, dataset=dataset, sort=sort)]
    if json_out:
        emit_json({"dir": str(root), "runs": rows})
        return
    if not rows:
        where = f" on dataset {dataset!r}" if dataset is not None else ""
        typer.echo(f"no runs{where} in {root}: fit one with `tlx fit-head`")
        return
    header = ["kind", "head", "params", "dataset", "backbone", "n_val", "val acc", "fit s", "run"]
    cells = [
        [
            r["kind"],
            str(r["clf"]),
            r["summary"],
            str(r["dataset"] or "-"),
            str(r["backbone"] or "-"),
            fmt(r["n_val"], "d"),
            r["status"] if r["status"] in ("interrupted", "damaged") else fmt(r["val_accuracy"], ".4f"),
            fmt(r["fit_seconds"], ".2f"),
            r["run"],
        ]
        for r in rows
    ]
    print_table(header, cells, title=f"runs in {root}", right={"n_val", "val acc", "fit s"})
    if any(r["status"] == "interrupted" for r in rows):
        typer.echo("interrupted: continue one with `tlx finetune --out RUN --resume`")
    damaged = [r for r in rows if r["status"] == "damaged"]
    if damaged:
        shown = "; ".join(r["problem"] for r in damaged[:5]) + ("; ..." if len(damaged) > 5 else "")
        typer.echo(f"warning: {len(damaged)} damaged run(s), listed but not scored: {shown}", err=True)


# What `tlx runs --json` copies from each run's record as it is.
COPIED = ("kind", "clf", "dataset", "cache", "n_train", "n_val", "val_accuracy", "balanced_accuracy", "fit_seconds")
FINETUNE_SUMMARY = ("unfreeze", "epochs", "lr", "optimizer", "batch_size")


def _row(record: dict) -> dict:
    """One run of `tlx runs --json` (the table shows a few of its fields)."""
    params = record.get("params_set")
    if params is None:
        params = record.get("params") or {}
    return {
        "run": record["run"],
        "status": record.get("status", "done"),
        "params": params,
        "summary": _summary(record, params),
        "backbone": (record.get("feature_space") or {}).get("backbone"),
        **{key: record.get(key) for key in COPIED},
        "created": record.get("created"),
        **({"problem": record["problem"]} if "problem" in record else {}),
    }


def _summary(record: dict, params: dict) -> str:
    """A head's parameters as set; for a fine-tuning, the few options that shape it most."""
    if record.get("kind") != "finetune":
        return _param_list(params)
    parts = [_param_list({k: params[k] for k in FINETUNE_SUMMARY if k in params})]
    if params.get("init_head"):
        parts.append(f"init_head={Path(str(params['init_head'])).name}")
    if record.get("best_epoch") is not None:
        parts.append(f"best epoch {record['best_epoch']}/{record.get('epochs_done', '?')}")
    return ", ".join(part for part in parts if part)
