"""``agg serve`` and ``agg eval-dedup``: the web reader, and measuring the grouping."""

from __future__ import annotations

from pathlib import Path

import click

from aggregator.cli.app import (
    Context,
    _echo_json,
    _optional_config,
    cli,
    fail,
    pass_context,
    terminal_safe,
)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but this machine warns: there is no authentication.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.option("--db", "db_path", metavar="PATH", help="The database to read (the same as 'agg --db PATH serve').")
@pass_context
def serve(ctx: Context, host: str, port: int, db_path: str | None) -> None:
    """Read the stories in a browser: a local web reader over the database, read-only.

    Pages: the stories (with the filters of 'agg list'), each story with every
    report and its original source, full-text search, and the feeds' health
    ('agg status'). Keys: j/k next/previous, o open, / search. It only reads,
    so it keeps working while 'agg fetch' or 'agg daemon' writes. There is no
    authentication: it listens on 127.0.0.1 unless told otherwise.

    \b
    Examples:
      agg serve                              http://127.0.0.1:8080/
      agg serve --db data/demo/agg.db --port 8000
      agg serve --host 0.0.0.0               every address: anyone who can reach it reads everything
    """
    from aggregator.web.app import serve as serve_reader
    from aggregator.web.safety import exposure_warning

    if db_path:
        ctx.db_path = Path(db_path)
    ctx.store(readonly=True)  # a missing or unusable database is reported now, not on the first page
    warning = exposure_warning(host, port)
    if warning:
        click.secho(f"agg: {warning}", err=True, fg="red", bold=True)
    shown_host = f"[{host}]" if ":" in host else host
    if not ctx.quiet:
        click.echo(f"agg: serving {ctx.db_path} read-only at http://{shown_host}:{port}/ (Ctrl-C stops)", err=True)
    serve_reader(ctx.db_path, host, port, verbose=bool(ctx.verbose))


@cli.command(name="eval-dedup")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "uci"]), default="jsonl", show_default=True,
              help="jsonl: id, title, text, url, source, published, gold story; uci: the UCI headlines CSV.")
@click.option("--orders", type=click.IntRange(0, 1000), default=0, metavar="N",
              help="Also group the file in N shuffled orders of arrival (the same N orders every time) and "
                   "print the mean and lowest figures.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_context
def eval_dedup(ctx: Context, file: Path, fmt: str, orders: int, as_json: bool) -> None:
    """Group a labelled FILE with the pipeline's story grouping and score it against its gold stories.

    Prints pairwise and B-cubed precision/recall/F1, gold and predicted story
    counts, and seconds. Thresholds come from the config's dedup: block when
    the config exists. Reports without a time are placed as fetched with the
    dated report before them in the file. Lines without an id or a text are
    counted in a warning on stderr.

    A labelled file often lists each story's reports together, an order no
    run of feeds brings them in, and grouping is incremental: --orders N
    also groups it in N shuffled orders of arrival (reports with times still
    come in time order; the shuffle decides among those of one time and
    the undated) and prints the mean and the lowest of each figure.

    \b
    Examples:
      agg eval-dedup tests/fixtures/dedup/stories.jsonl
      agg eval-dedup ../shared/data/stories-dev/allsides.jsonl --orders 8
      agg eval-dedup --format uci ../shared/data/headlines/uci-news-aggregator.head6366.csv --json
    """
    from aggregator.evaluate import evaluate_file, format_result

    config = _optional_config(ctx)
    try:
        result = evaluate_file(file, fmt=fmt, settings=config.settings.dedup if config else None, orders=orders)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    except (ValueError, KeyError) as exc:
        fail(f"cannot read {file} as {fmt}: {terminal_safe(exc)}")
    for warning in result.warnings:
        click.echo(f"warning: {terminal_safe(str(file))}: {warning}", err=True)
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(format_result(result))
