"""`imaginem watch`: the images of a version processed as they land.

The same steps, options and result store as `imaginem run`, in an unbounded
pipeline: `WatchVersion` lists the version's folders every few seconds and lets each
new file through once; the steps run; each image's results are stored and its rows
committed within seconds (`CommitEach`). Files whose rows are in the tables and
whose results are all stored are not started again, so a restart computes nothing
twice.

Ctrl-C or SIGTERM drains: the source stops listing, the images in flight finish and
commit, and the summary prints. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator

import apache_beam as beam

from beam_pipeline import azure_options, local_runner, watch_options
from beam_pipeline import run as run_command
from beam_pipeline.progress_view import showing, watch_line
from beam_pipeline.summary import (
    NO_METRICS,
    describe_failures,
    duplicates_line,
    summarize_watch,
)
from transforms import paths
from transforms.corpus.arrivals import QueueSettings, WatchVersion, finished_paths
from transforms.io.azure_access import is_azfs
from transforms.io.blobs import BlobContainer
from transforms.io.storage import absolute_root
from transforms.records import StepName
from transforms.retry import describe
from transforms.tables import delta, schemas
from transforms.tables.duplicates import group_count
from transforms.tables.result_store import StoreNewResults
from transforms.tasks.commit_each import CommitEach, CommitSettings
from transforms.tasks.faces.match import MatchFaces
from transforms.tasks.output import grouping_of

LOGGER = logging.getLogger("imaginem")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
QUEUE_LAG_SECONDS = 5.0


def column_steps(plan: run_command.RunPlan) -> tuple[str, ...]:
    """The watch's steps that fill a column of `images`."""
    context = plan.context
    return tuple(step for step in context.run_steps if step in context.step_columns)


def already_done(plan: run_command.RunPlan) -> frozenset[str]:
    """URIs of the version's files that need nothing more: every step's result or
    error is in their rows and every result the watch stores is in the store, or
    their content does not decode. A file that could not be read is tried again."""
    context = plan.context
    root, version = context.corpus_root, context.corpus_version
    finished = finished_paths(root, version, column_steps(plan), unreadable_finishes=False)
    where = delta.location(root, schemas.IMAGES)
    images = []
    if delta.exists(where):
        sql = (
            f"SELECT source_path, image_sha256 FROM t WHERE corpus_version = {delta.quote(version)}"
        )
        images = delta.query(where, sql).to_pylist()
    results = context.results
    stored = context.result_store.stored_steps(results, {row["image_sha256"] for row in images})
    incomplete = {
        row["source_path"]
        for row in images
        if not set(results.fingerprints) <= stored.get(row["image_sha256"], set())
    }
    done = set()
    for source_path in finished - incomplete:
        set_path, _, name = source_path.rpartition("/")
        done.add(paths.original_uri(root, set_path, version, name))
    return frozenset(done)


def without_clustering(plan: run_command.RunPlan) -> run_command.RunPlan:
    """The plan with facematch matching each face as it comes, never clustering: a
    watch never ends, so it would hold every unknown face until it stops."""
    transforms = [
        dataclasses.replace(transform, cluster=False)
        if isinstance(transform, MatchFaces)
        else transform
        for transform in plan.transforms
    ]
    return dataclasses.replace(plan, transforms=transforms)


def queue_settings(plan: run_command.RunPlan, flags) -> QueueSettings | None:
    """The queue the watch reads, if `--queue` names one.

    Raises:
        UsageError: a queue for a corpus that is not on Azure.
    """
    if not flags.queue:
        return None
    access = plan.context.result_store.access
    if access is None:
        raise run_command.UsageError(
            "--queue reads a Storage Queue of the corpus's account: the corpus must be an "
            "azfs:// root"
        )
    return QueueSettings(flags.queue, access, column_steps(plan), flags.queue_visibility_seconds)


def check_queue(queue: QueueSettings) -> None:
    """Raises UsageError if the queue cannot be read."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        queue.access.queue_client(queue.name).get_queue_properties()
    except ResourceNotFoundError:
        raise run_command.UsageError(
            f"queue {queue.name!r} not found in account {queue.access.account}: create it and "
            "have Event Grid deliver the container's blob-created events to it"
        ) from None
    except AzureError as error:
        message = f"cannot read queue {queue.name!r}: {describe(error)}"
        raise run_command.UsageError(message) from None


def with_queue_lag(line, queue: QueueSettings):
    """The progress line and the messages waiting in the queue, asked every few seconds."""
    client = queue.access.queue_client(queue.name)
    asked = {"at": 0.0, "waiting": None}

    def line_with_lag(counts, elapsed: float) -> str:
        from azure.core.exceptions import AzureError

        if time.monotonic() - asked["at"] > QUEUE_LAG_SECONDS:
            asked["at"] = time.monotonic()
            with contextlib.suppress(AzureError):
                properties = client.get_queue_properties()
                asked["waiting"] = properties.approximate_message_count
        waiting = asked["waiting"]
        return line(counts, elapsed) + ("" if waiting is None else f" · queue ~{waiting}")

    return line_with_lag


def build_watch(pipeline: beam.Pipeline, plan: run_command.RunPlan, flags, stop_file: str) -> None:
    """WatchVersion, the steps, then each image's results stored and rows committed."""
    context = plan.context
    source = pipeline | "WatchVersion" >> WatchVersion(
        context.corpus_root,
        context.corpus_version,
        context.results,
        context.result_store,
        stop_file,
        already_done(plan),
        flags.poll_seconds,
        queue_settings(plan, flags),
    )
    records, errors, _ = run_command.run_steps(plan, source)
    stored = records | "StoreNewResults" >> StoreNewResults(
        context.result_store, context.results.fingerprints
    )
    settings = CommitSettings(
        context.corpus_root, context.corpus_version, context.step_columns, context.run_steps
    )
    _ = stored | "CommitImages" >> CommitEach(settings)
    for number, step_errors in enumerate(errors):
        _ = step_errors | f"CommitErrors{number}" >> CommitEach(settings)


@contextlib.contextmanager
def draining(stop_file: str) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM writes the stop file: the source ends and the
    images in flight finish. A second Ctrl-C goes to the handler that was there."""
    at_once = signal.getsignal(signal.SIGINT)

    def drain(signum, frame) -> None:
        with open(stop_file, "w"):
            pass
        print(
            "\nStopping: the images in flight finish and commit (Ctrl-C again stops at once)",
            file=sys.stderr,
            flush=True,
        )
        signal.signal(signal.SIGINT, at_once)

    previous = {sig: signal.signal(sig, drain) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(plan: run_command.RunPlan, flags, stop_file: str):
    run_command.prepare_models(plan)
    local = local_runner.uses_default_runner(plan.pipeline_options)
    runner = local_runner.local_runner(plan.pipeline_options) if local else None
    pipeline = beam.Pipeline(runner=runner, options=plan.pipeline_options)
    build_watch(pipeline, plan, flags, stop_file)
    context = plan.context
    LOGGER.info(
        "Watching %s version %s with steps %s: new images are processed as they land; Ctrl-C stops",
        context.corpus_root,
        context.corpus_version,
        ",".join(plan.step_names),
    )
    queue = queue_settings(plan, flags)
    line = with_queue_lag(watch_line, queue) if queue else watch_line
    started = time.monotonic()
    with (
        showing(line) if local else contextlib.nullcontext() as counts,
        local_runner.interrupted_quietly() if local else contextlib.nullcontext(),
        draining(stop_file),
    ):
        result = pipeline.run()
        result.wait_until_finish()
    # Beam's own metrics nest a level per bundle, too deep to read after a long watch.
    if counts is None:
        return result, NO_METRICS
    summary = summarize_watch(
        counts.by_namespace(),
        context.corpus_root,
        context.corpus_version,
        plan.step_names,
        time.monotonic() - started,
    )
    return result, summary


def _create_container(argv: list[str]) -> None:
    """A watch may start before anything was ingested: the container must exist for
    its tables to be looked up."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--corpus")
    azure_options.add_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    if not args.corpus or not is_azfs(args.corpus):
        return
    root = absolute_root(args.corpus)
    azure = azure_options.resolve(args, root)
    BlobContainer(azure.access, root).create_container()


def watch(argv: list[str]) -> int:
    try:
        _create_container(argv)
        plan = without_clustering(run_command.plan_run(argv, watching=True))
        flags = watch_options.parse(argv)
        if queue := queue_settings(plan, flags):
            check_queue(queue)
        if plan.dry_run or plan.summary_json:
            raise run_command.UsageError(
                "--dry-run and --summary-json are for batch runs: use imaginem run"
            )
        run_command.prepare_outputs(plan)
    except (run_command.UsageError, ValueError) as error:
        print(f"imaginem watch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    context = plan.context
    with tempfile.TemporaryDirectory(prefix="imaginem-watch-") as folder:
        try:
            result, summary = _run(plan, flags, os.path.join(folder, "stop"))
        except KeyboardInterrupt:
            print("imaginem watch: stopped at once; what was committed stays", file=sys.stderr)
            return 130
        except Exception as error:  # noqa: BLE001 - end on a one-line reason after the traceback
            LOGGER.exception("pipeline failed")
            print(
                f"imaginem watch: the pipeline failed: {type(error).__name__}: {error}",
                file=sys.stderr,
            )
            return EXIT_FAILED
    print(summary)
    if StepName.PHASH in plan.step_names and (grouping := grouping_of(context)):
        # A watch commits image by image: near-duplicates are grouped once, at its end.
        metadata = delta.commit_metadata("watch", corpus_version=context.corpus_version)
        try:
            rows = grouping.regroup(context.corpus_root, metadata)
        except Exception as error:  # noqa: BLE001 - what was committed stays
            print(
                f"imaginem watch: grouping near-duplicates failed: {describe(error)}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        print(duplicates_line(context.corpus_root, len(rows), group_count(rows)))
    if failures := describe_failures(context.corpus_root, context.corpus_version, plan.step_names):
        print(failures)
    return EXIT_OK if result.state == "DONE" else EXIT_FAILED
