"""A short human summary of a run, built from the steps' metrics."""

from __future__ import annotations

from collections import defaultdict

from apache_beam.runners.runner import PipelineResult

from transforms import azure_sink, azure_tables, paths
from transforms.faces.match import GALLERY_STEP
from transforms.faces.table import FACES
from transforms.inference import ANSWERS_REUSED
from transforms.records import INGEST_STEP, READ_STEP, StepName
from transforms.remote import api_step
from transforms.steps.output import ERROR_ROWS, FACE_ROWS, IMAGE_ROWS
from transforms.tables import schemas

_SKIPPED_EXISTING = "skipped_existing"


def step_counters(result: PipelineResult) -> dict[str, dict[str, int]]:
    """namespace -> counter name -> value, summed over the graph's stages."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for counter in result.metrics().query()["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.namespace][counter.key.metric.name] += value or 0
    return totals


def _describe(counters: dict[str, int]) -> str:
    parts = [f"{counters.get('processed', 0)} processed"]
    if counters.get(_SKIPPED_EXISTING):
        parts.append(f"{counters[_SKIPPED_EXISTING]} skipped (output already there)")
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


def summarize(
    result: PipelineResult, corpus_root: str, corpus_version: str, steps: list[str]
) -> str:
    counters = step_counters(result)
    output = counters.get(StepName.PIPELINE_OUTPUT, {})
    rejected = counters.get(INGEST_STEP, {}).get("failed", 0)
    lines = [f"Run of {corpus_root} version {corpus_version}: {result.state}"]
    read = counters.get(READ_STEP, {})
    lines.append(f"  {'read':<16} {_describe(read)}, {rejected} rejected at ingest")
    for step in steps:
        if step != StepName.PIPELINE_OUTPUT:
            lines.append(f"  {step:<16} {_describe(counters.get(step, {}))}")
    for namespace in sorted(n for n in counters if n.startswith(f"{GALLERY_STEP}.")):
        lines.append(f"  {namespace:<16} {_describe(counters[namespace])}")
    for table, rows in (
        (schemas.IMAGES, IMAGE_ROWS),
        (FACES, FACE_ROWS),
        (schemas.ERRORS, ERROR_ROWS),
    ):
        location = paths.partition_dir(corpus_root, table, corpus_version=corpus_version)
        lines.append(f"  {table + ' table':<16} {output.get(rows, 0)} rows in {location}")
    if azure := counters.get(azure_sink.NAMESPACE):
        lines.append(f"  {'Azure tables':<16} {_describe_azure(azure)}")
    return "\n".join(lines)
