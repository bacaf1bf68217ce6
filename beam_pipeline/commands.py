"""The `imaginem` commands."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from tqdm import tqdm

from beam_pipeline import api_options, azure_options
from beam_pipeline import run as run_command
from beam_pipeline.arg_types import positive
from beam_pipeline.diff import describe as describe_diff
from beam_pipeline.diff import diff_versions, needed_results, stored_results
from beam_pipeline.dry_run import estimate
from beam_pipeline.report.build import report
from beam_pipeline.review import review
from beam_pipeline.summary import (
    describe_failures,
    summarize,
    summary_record,
    write_summary_json,
)
from beam_pipeline.watch import watch
from transforms import paths
from transforms.corpus.ingest import (
    DEFAULT_MAX_PARALLEL,
    DEFAULT_MAX_PARALLEL_METADATA,
    BlobDestination,
    IngestReport,
    check_apart,
    ingest_drop,
)
from transforms.corpus.read import image_hashes
from transforms.corpus.sample import build_sample_corpus, build_sample_gallery
from transforms.inference.model_files import CACHE_ENV
from transforms.io.blobs import BlobContainer
from transforms.io.storage import absolute_root
from transforms.remote.answer_store import import_legacy_answers
from transforms.remote.quota import QuotaServer
from transforms.retry import describe
from transforms.tables.migrate import BACKUP_SUFFIX, migrate_corpus
from transforms.tasks import classify
from transforms.tasks.registry import load_registry

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
LOGGER = logging.getLogger("imaginem")


def _progress_bar(total: int) -> Callable[[], None]:
    # disable=None hides the bar when stderr is not a terminal (CI logs).
    bar = tqdm(total=total, unit="file", desc="ingest", disable=None, file=sys.stderr)
    return lambda: bar.update(1)


def _print_ingest_report(report: IngestReport, root: str) -> None:
    print(
        f"Ingested version {report.corpus_version} into {root}: {report.copied} new "
        f"({report.bytes_copied:,} bytes copied), {report.linked} already in the corpus "
        f"(linked, no bytes copied), {report.skipped} already in this version, "
        f"{len(report.failed)} failed, {report.ignored} ignored (not images or hidden); "
        f"{report.image_sets} image sets"
    )
    if report.retries:
        print(f"{report.retries} transient storage failure(s) were retried")
    if report.table_rows:
        print(f"{report.table_rows} ImageSets row(s) written to Azure Table Storage")
    if report.table_error:
        print(f"ImageSets rows not written ({report.table_error}); run ingest again to write them")
    if report.failed:
        print(f"{len(report.failed)} file(s) failed:")
        for failure in report.failed:
            print(f"  {failure.source_path}: {failure.reason}")


def ingest(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imaginem ingest",
        description="Copy a drop folder into the corpus as one version. Each sub-folder is "
        "an image set whose path components are its tags. Re-running resumes.",
    )
    parser.add_argument("drop_dir", help="local folder of images")
    parser.add_argument("--corpus", required=True, help="corpus root: a folder or a Beam URI")
    parser.add_argument("--version", required=True, help="corpus version the drop becomes")
    parser.add_argument(
        "--max-parallel",
        type=positive(int),
        default=DEFAULT_MAX_PARALLEL,
        help="files copied at once (default %(default)s)",
    )
    parser.add_argument(
        "--max-parallel-metadata",
        type=positive(int),
        default=DEFAULT_MAX_PARALLEL_METADATA,
        help="Azure Table writes at once (default %(default)s)",
    )
    azure_options.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.corpus = absolute_root(args.corpus)
        paths.check_version(args.version)
        azure = azure_options.resolve(args, args.corpus)
    except ValueError as error:
        parser.error(str(error))
    if not os.path.isdir(args.drop_dir):
        parser.error(f"drop folder {args.drop_dir!r} does not exist or is not a folder")
    try:
        check_apart(args.drop_dir, args.corpus)
    except ValueError as error:
        parser.error(str(error))
    # Beam's filesystems (manifest and tables) find their credentials in the environment.
    FileSystems.set_options(PipelineOptions(azure_options.beam_flags_for(azure.access)))
    destination = None
    if azure.access is not None:
        from azure.core.exceptions import AzureError

        container = BlobContainer(azure.access, args.corpus)
        try:
            container.create_container()
            if azure.tables is not None:
                azure.tables.create_all()
        except AzureError as error:
            print(
                f"imaginem ingest: error: cannot reach account {azure.access.account}: "
                + describe(error),
                file=sys.stderr,
            )
            return EXIT_FAILED
        destination = BlobDestination(container)
    report = ingest_drop(
        args.drop_dir,
        args.corpus,
        args.version,
        args.max_parallel,
        _progress_bar,
        destination=destination,
        azure_tables=azure.tables,
        max_parallel_metadata=args.max_parallel_metadata,
    )
    _print_ingest_report(report, args.corpus)
    return EXIT_OK if report.ok else EXIT_FAILED


def run(argv: list[str]) -> int:
    try:
        plan = run_command.plan_run(argv)
    except run_command.UsageError as error:
        print(f"imaginem run: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    context = plan.context
    if plan.dry_run:
        if plan.api is None:
            print("Dry run: no step runs on a remote API, so no API call would be made")
        else:
            print(estimate(plan.api, context.corpus_root, context.corpus_version))
        return EXIT_OK
    try:
        run_command.prepare_outputs(plan)
    except run_command.UsageError as error:
        print(f"imaginem run: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = run_command.start(plan)
    except run_command.UsageError as error:
        print(f"imaginem run: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(_describe_interrupted(plan), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - end on a one-line reason after the traceback
        LOGGER.exception("pipeline failed")
        print(
            f"imaginem run: the pipeline failed: {type(error).__name__}: {error}", file=sys.stderr
        )
        return EXIT_FAILED
    print(summarize(result, context.corpus_root, context.corpus_version, plan.step_names))
    if failures := describe_failures(context.corpus_root, context.corpus_version, plan.step_names):
        print(failures)
    if path := plan.summary_json:
        write_summary_json(path, summary_record(result, plan.step_names))
    # Bad input images are reported in the errors table; they do not fail the run.
    return EXIT_OK if result.state == "DONE" else EXIT_FAILED


def _describe_interrupted(plan: run_command.RunPlan) -> str:
    """What an interrupted run leaves: the results its workers had stored, kept for the next."""
    lines = ["imaginem run: interrupted."]
    try:
        stored = stored_results(plan)
    except (Exception, KeyboardInterrupt):  # noqa: BLE001 - the hint matters more than counts
        stored = None
    if stored is not None and not any(stored.values()):
        lines.append(
            "No result was stored yet (workers store what they compute every few seconds)."
        )
    elif stored:
        counts = ", ".join(f"{step} {count}" for step, count in stored.items())
        lines.append(f"Results stored so far, of the {plan.images} images: {counts}.")
    again = "Run the same command again to resume: stored results are not computed again"
    if recompute := sorted(plan.context.results.recompute):
        again += f" (but --recompute {','.join(recompute)} computes those steps again)"
    lines.append(again + ".")
    return "\n".join(lines)


def sample_corpus(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imaginem sample-corpus",
        description="Write a sample drop of real photos shipped in PyPI packages plus "
        "rendered text images.",
    )
    parser.add_argument("drop_dir", help="folder to create the drop in")
    parser.add_argument(
        "--gallery",
        metavar="DIR",
        help="also write a gallery of known people (for facematch) made from the drop",
    )
    args = parser.parse_args(argv)
    written = build_sample_corpus(args.drop_dir)
    print(f"Wrote {len(written)} sample images to {args.drop_dir}")
    if args.gallery:
        gallery = build_sample_gallery(args.drop_dir, args.gallery)
        print(f"Wrote a gallery of {len(gallery)} people to {args.gallery}")
    return EXIT_OK


def diff(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imaginem diff",
        description="List the files added, removed, changed and unchanged between two "
        "versions, and how many results per step the newer one still needs. Other flags "
        "are those of `imaginem run` (--steps and step options), for the results count.",
    )
    parser.add_argument("--corpus", required=True, help="corpus root: a folder or a Beam URI")
    parser.add_argument("--from", dest="old", required=True, help="the older version")
    parser.add_argument("--to", dest="new", required=True, help="the newer version")
    args, run_flags = parser.parse_known_args(argv)
    try:
        plan = run_command.plan_run(["--corpus", args.corpus, "--version", args.new, *run_flags])
        paths.check_version(args.old)
    except (run_command.UsageError, ValueError) as error:
        parser.error(str(error))
    root = plan.context.corpus_root
    changes = diff_versions(root, args.old, args.new)
    needed = needed_results(plan)
    print(describe_diff(changes, args.old, args.new, needed, len(image_hashes(root, args.new))))
    return EXIT_OK


def migrate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imaginem migrate",
        description="Convert the Parquet tables of an older release into Delta tables, once.",
    )
    parser.add_argument("--corpus", required=True, help="corpus root: a local folder")
    args = parser.parse_args(argv)
    root = absolute_root(args.corpus)
    try:
        converted = migrate_corpus(root)
    except ValueError as error:
        parser.error(str(error))
    for table in converted:
        print(f"Converted {table} (the old files are kept in {table}{BACKUP_SUFFIX})")
    answers = import_legacy_answers(root)
    if answers:
        print(f"Moved {answers} stored API answer(s) into the results table")
    print(f"{len(converted)} table(s) converted" if converted or answers else "Nothing to convert")
    return EXIT_OK


def steps(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="imaginem steps", description="List known steps.")
    parser.add_argument("--step-module", action="append", default=[])
    args = parser.parse_args(argv)
    registry = load_registry(args.step_module)
    width = max(len(name) for name in registry)
    for step in registry.values():
        needs = ", ".join(step.depends_on) or "-"
        print(f"{step.name:<{width}}  v{step.version:<4} needs {needs:<24} {step.description}")
    return EXIT_OK


def quota_server(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imaginem quota-server",
        description="Hold the API requests of every run that names this service "
        "(imaginem run --api-quota-url URL), on any machine, to one rate together.",
    )
    parser.add_argument(
        "--rate",
        type=api_options.rate_type,
        required=True,
        metavar="RATE",
        help="requests per s, min or h for all those runs together, e.g. 10/s or 600/min",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to listen on (default: any free port)"
    )
    parser.add_argument(
        "--advertise",
        metavar="HOST",
        help="name or address runs and workers reach it by (default: --host, or this "
        "machine's name when that is 0.0.0.0)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, got {args.port}")
    try:
        api_options.check_host(args.host, "--host")
        server = QuotaServer(args.rate, args.host, args.port, args.advertise)
    except ValueError as error:
        parser.error(str(error))
    except OSError as error:
        parser.error(f"cannot listen on {args.host}:{args.port}: {error.strerror}")
    stop = threading.Event()
    for stopping in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stopping, lambda *_: stop.set())
    with server:
        print(f"Quota service holding {args.rate} at {server.url}", flush=True)
        print(f"Runs share it with: imaginem run ... --api-quota-url {server.url}", flush=True)
        while not stop.wait(1.0):
            pass
    print("Quota service stopped", flush=True)
    return EXIT_OK


def models(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="imaginem models",
        description="Models converted once, before any run needs them.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "export",
        help=f"export EfficientNet-Lite0 to ONNX into ${CACHE_ENV} (needs the export extra: "
        "requirements-export.txt); runs then need no torch",
    )
    parser.parse_args(argv)
    try:
        path = classify.onnx_model_path()
    except classify.ModelNotExportedError as error:
        parser.error(str(error))
    except (RuntimeError, OSError) as error:  # an export that fails its check; no room
        print(f"imaginem models: the export failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"Classification model (ONNX): {path}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "diff": diff,
    "ingest": ingest,
    "migrate": migrate,
    "models": models,
    "quota-server": quota_server,
    "report": report,
    "review": review,
    "run": run,
    "sample-corpus": sample_corpus,
    "steps": steps,
    "watch": watch,
}
