"""A short human summary of a run, built from the steps' metrics."""

from __future__ import annotations

import json
from collections import defaultdict

from apache_beam.runners.runner import PipelineResult

from transforms import paths
from transforms.inference.run_model import ANSWERS_REUSED
from transforms.io import storage
from transforms.per_image import Outcome
from transforms.records import INGEST_STEP, READ_STEP, StepName
from transforms.remote import api_step
from transforms.tables import azure_sink, azure_tables, delta, result_store, schemas
from transforms.tables.schemas import FACES
from transforms.tasks.faces.match import GALLERY_STEP
from transforms.tasks.output import (
    DUPLICATE_GROUPS,
    DUPLICATE_ROWS,
    ERROR_ROWS,
    FACE_ROWS,
    IMAGE_ROWS,
)

NO_METRICS = "metrics not available on this runner: the tables hold what was done"


def step_counters(result: PipelineResult) -> dict[str, dict[str, int]] | None:
    """namespace -> counter name -> value, summed over the graph's stages; None when
    the runner reports no metrics."""
    try:
        counters = result.metrics().query()["counters"]
    except (NotImplementedError, AttributeError, KeyError, TypeError):
        return None
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.namespace][counter.key.metric.name] += value or 0
    return totals


def _describe(counters: dict[str, int]) -> str:
    parts = [f"{counters.get('processed', 0)} processed"]
    if counters.get(Outcome.REUSED):
        parts.append(f"{counters[Outcome.REUSED]} reused (stored result)")
    if counters.get(Outcome.SKIPPED_EXISTING):
        parts.append(f"{counters[Outcome.SKIPPED_EXISTING]} skipped (output already there)")
    if counters.get("skipped_upstream_failed"):
        parts.append(f"{counters['skipped_upstream_failed']} skipped (earlier step failed)")
    parts.append(f"{counters.get('failed', 0)} failed")
    if any(name.startswith("api_") for name in counters) or counters.get(ANSWERS_REUSED):
        parts.append(_describe_api(counters))
    if "faces_matched" in counters or "faces_unmatched" in counters:
        parts.append(
            f"faces: {counters.get('faces_matched', 0)} matched a known person, "
            f"{counters.get('faces_unmatched', 0)} not"
        )
    return ", ".join(parts)


def _describe_api(counters: dict[str, int]) -> str:
    return (
        f"API: {counters.get(api_step.REQUESTS, 0)} requests for "
        f"{counters.get(api_step.IMAGES_SENT, 0)} images, "
        f"{counters.get(api_step.RETRIES, 0)} retries, "
        f"{counters.get(api_step.THROTTLED, 0)} throttled "
        f"({counters.get(api_step.THROTTLED_MS, 0) / 1000:.1f}s waited), "
        f"{counters.get(api_step.QUOTA_WAIT_MS, 0) / 1000:.1f}s paced by --api-rate, "
        f"{counters.get(ANSWERS_REUSED, 0)} answers reused"
    )


def _describe_azure(counters: dict[str, int]) -> str:
    parts = [
        f"{table} {counters.get(azure_sink.upserted_counter(table), 0)} upserted, "
        f"{counters.get(azure_sink.deleted_counter(table), 0)} stale deleted"
        for table in (azure_tables.IMAGES, azure_tables.FACES)
    ]
    sets = counters.get(azure_sink.upserted_counter(azure_tables.IMAGE_SETS), 0)
    parts.append(f"{azure_tables.IMAGE_SETS} {sets} transformed sets upserted")
    return "; ".join(parts)


def step_outcomes(counters: dict[str, int]) -> dict[str, int]:
    """One step's results: computed by this run, reused from the store, failed."""
    return {
        "computed": counters.get(Outcome.PROCESSED, 0) + counters.get(Outcome.SKIPPED_EXISTING, 0),
        "reused": counters.get(Outcome.REUSED, 0),
        "failed": counters.get("failed", 0),
        "skipped_upstream_failed": counters.get("skipped_upstream_failed", 0),
    }


def summary_record(result: PipelineResult, steps: list[str]) -> dict:
    """The run's summary as data, for `--summary-json` and schedulers."""
    counters = step_counters(result)
    if counters is None:
        return {"status": str(result.state), "metrics": NO_METRICS}
    output = counters.get(StepName.PIPELINE_OUTPUT, {})
    read = counters.get(READ_STEP, {})
    return {
        "status": str(result.state),
        "steps": {
            step: step_outcomes(counters.get(step, {}))
            for step in steps
            if step != StepName.PIPELINE_OUTPUT
        },
        "read": {
            "read": read.get(Outcome.PROCESSED, 0),
            "not_needed": read.get("not_needed", 0),
            "failed": read.get("failed", 0),
            "rejected_at_ingest": counters.get(INGEST_STEP, {}).get("failed", 0),
        },
        "results_stored": counters.get(result_store.NAMESPACE, {}).get("stored", 0),
        "tables": {table: output.get(rows, 0) for table, rows in _table_rows(steps)},
        **(
            {"duplicate_groups": output.get(DUPLICATE_GROUPS, 0)} if StepName.PHASH in steps else {}
        ),
    }


_TABLE_ROWS = ((schemas.IMAGES, IMAGE_ROWS), (FACES, FACE_ROWS), (schemas.ERRORS, ERROR_ROWS))


def _table_rows(steps: list[str]) -> tuple[tuple[str, str], ...]:
    """(table, its row counter) of the tables the run's steps write."""
    grouped = ((schemas.DUPLICATES, DUPLICATE_ROWS),) if StepName.PHASH in steps else ()
    return _TABLE_ROWS + grouped


def summarize(
    result: PipelineResult, corpus_root: str, corpus_version: str, steps: list[str]
) -> str:
    counters = step_counters(result)
    lines = [f"Run of {corpus_root} version {corpus_version}: {result.state}"]
    if counters is None:
        return "\n".join([*lines, f"  {NO_METRICS}"])
    output = counters.get(StepName.PIPELINE_OUTPUT, {})
    rejected = counters.get(INGEST_STEP, {}).get("failed", 0)
    read = counters.get(READ_STEP, {})
    not_needed = read.get("not_needed", 0)
    lines.append(
        f"  {'read':<16} {_describe(read)}, {rejected} rejected at ingest"
        + (f", {not_needed} not read (every result stored)" if not_needed else "")
    )
    for step in steps:
        if step != StepName.PIPELINE_OUTPUT:
            lines.append(f"  {step:<16} {_describe(counters.get(step, {}))}")
    for namespace in sorted(n for n in counters if n.startswith(f"{GALLERY_STEP}.")):
        lines.append(f"  {namespace:<16} {_describe(counters[namespace])}")
    stored = counters.get(result_store.NAMESPACE, {}).get("stored", 0)
    lines.append(f"  {'results':<16} {stored} new results stored for later runs")
    for table, rows in _TABLE_ROWS:
        location = paths.partition_dir(corpus_root, table, corpus_version=corpus_version)
        lines.append(f"  {table + ' table':<16} {output.get(rows, 0)} rows in {location}")
    if StepName.PHASH in steps:
        lines.append(
            duplicates_line(
                corpus_root, output.get(DUPLICATE_ROWS, 0), output.get(DUPLICATE_GROUPS, 0)
            )
        )
    if azure := counters.get(azure_sink.NAMESPACE):
        lines.append(f"  {'Azure tables':<16} {_describe_azure(azure)}")
    return "\n".join(lines)


def duplicates_line(corpus_root: str, images: int, groups: int) -> str:
    location = paths.metadata_dir(corpus_root, schemas.DUPLICATES)
    return (
        f"  {'duplicates':<16} {images} images in {groups} near-duplicate groups, "
        f"all versions, in {location}"
    )


def summarize_watch(
    counters: dict[str, dict[str, int]],
    corpus_root: str,
    corpus_version: str,
    steps: list[str],
    seconds: float,
) -> str:
    """A watch's summary, from the counts its workers reported while it ran."""
    watch = counters.get("watch", {})
    lines = [
        f"Watch of {corpus_root} version {corpus_version}: stopped after {seconds:.0f} s",
        f"  {'new files':<16} {watch.get('seen', 0)} seen, {watch.get('committed', 0)} "
        "committed to the tables",
        f"  {'read':<16} {_describe(counters.get(READ_STEP, {}))}",
    ]
    for step in steps:
        if step != StepName.PIPELINE_OUTPUT:
            lines.append(f"  {step:<16} {_describe(counters.get(step, {}))}")
    return "\n".join(lines)


MAX_FAILURES_SHOWN = 10


def describe_failures(
    corpus_root: str, corpus_version: str, steps: list[str], limit: int = MAX_FAILURES_SHOWN
) -> str:
    """The files of the version that failed the run's steps, by name, from `errors`."""
    rows = delta.read_rows(
        delta.location(corpus_root, schemas.ERRORS), delta.version_filter(corpus_version)
    )
    owned = {INGEST_STEP, READ_STEP, *steps}
    failures = sorted(
        (row["path"], row["step"], row["error_type"], row["message"] or "")
        for row in rows
        if row["step"] in owned
        or (StepName.FACE_MATCH in steps and row["step"].startswith(f"{GALLERY_STEP}."))
    )
    if not failures:
        return ""
    lines = [f"{len(failures)} failure(s), in the errors table:"]
    for path, step, error_type, message in failures[:limit]:
        lines.append(f"  {path}: {step}: {error_type}: {_first_line(message)}")
    if len(failures) > limit:
        lines.append(f"  … and {len(failures) - limit} more")
    return "\n".join(lines)


def _first_line(message: str, width: int = 160) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def write_summary_json(path: str, record: dict) -> None:
    """Writes the summary for a scheduler, atomically (any Beam filesystem path)."""
    storage.write_bytes_atomically(path, json.dumps(record, indent=2, sort_keys=True).encode())
