"""`imaginem run`: validate everything, then build and run the Beam graph.

Every check that can fail — flags, corpus version, step list, step options,
transform versions — runs before the pipeline starts, so a mistake costs seconds,
not a half-finished job.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, create_runner

from beam_pipeline import api_options, azure_options, local_runner, step_options, watch_options
from beam_pipeline.progress_view import show_progress
from transforms import paths
from transforms.corpus.read import (
    IMAGE_COLUMNS,
    ReadCorpus,
    hashes_of,
    manifest_rows,
    set_paths,
)
from transforms.io import storage
from transforms.per_image import ERRORS, RECORDS
from transforms.records import ImageRecord, StepName
from transforms.remote.answer_store import answer_step, legacy_answer_files
from transforms.remote.api import Api
from transforms.remote.api_step import answer_store
from transforms.remote.quota import QuotaUnavailableError, served_rate
from transforms.retry import describe
from transforms.tables import azure_tables, delta, schemas
from transforms.tables.result_store import ResultPlan, ResultStore, fingerprint
from transforms.tables.transforms import TransformSpec, register_transform, transform_row
from transforms.tasks.base import Step, StepContext
from transforms.tasks.on_api import chosen_api
from transforms.tasks.registry import (
    DEFAULT_DEFINITION,
    StepDefinitionError,
    dependencies,
    load_registry,
    parse_definition,
    resolve_steps,
)

LOGGER = logging.getLogger("imaginem")


class UsageError(ValueError):
    """A bad flag, option or corpus reference; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, validated."""

    context: StepContext
    steps: list[Step]
    transforms: list[beam.PTransform]
    pipeline_options: PipelineOptions
    beam_flags: list[str]
    api: api_options.ApiPlan | None = None  # the steps run on remote APIs
    transform_specs: tuple[TransformSpec, ...] = ()  # transform versions the run writes
    dry_run: bool = False  # only estimate the API calls
    summary_json: str | None = None  # where the summary also goes, as JSON
    images: int = 0  # distinct images of the version, what each step goes through

    @property
    def step_names(self) -> list[str]:
        return [step.name for step in self.steps]


def _pre_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--step-module", action="append", default=[])
    return parser


def build_parser(registry: dict[str, Step], watching: bool = False) -> argparse.ArgumentParser:
    if watching:
        parser = argparse.ArgumentParser(
            prog="imaginem watch",
            description="Process the images of one corpus version as they land, until "
            "Ctrl-C or SIGTERM (which let the images in flight finish). Flags not listed "
            "here go to Apache Beam (e.g. --runner, --streaming).",
        )
        watch_options.add_arguments(parser)
    else:
        parser = argparse.ArgumentParser(
            prog="imaginem run",
            description="Run the pipeline's steps over one corpus version. Flags not listed "
            "here go to Apache Beam (e.g. --runner, --direct_num_workers).",
        )
    parser.add_argument("--corpus", required=True, help="corpus root: a folder or a Beam URI")
    parser.add_argument("--version", required=True, help="corpus version to process")
    parser.add_argument(
        "--steps",
        default=DEFAULT_DEFINITION,
        help=f"comma-separated pipeline definition (default %(default)s); known: "
        f"{', '.join(sorted(registry))}",
    )
    parser.add_argument(
        "--step-module",
        action="append",
        default=[],
        help="import extra steps from this module (repeatable)",
    )
    parser.add_argument(
        "--recompute",
        default="",
        metavar="STEP[,STEP]",
        help="compute these steps again even where a result is stored ('all' for every "
        "step); by default only results that are missing are computed",
    )
    parser.add_argument(
        "--summary-json",
        metavar="PATH",
        help="also write the run's summary as JSON here, for schedulers",
    )
    azure_options.add_arguments(parser)
    api_options.add_arguments(parser)
    step_options.add_step_arguments(parser, registry.values())
    return parser


def unknown_beam_flags(flags: list[str]) -> list[str]:
    """Arguments that neither imaginem nor any Beam options class understands.

    Raises:
        UsageError: a Beam flag with a value Beam cannot parse.
    """
    strays = [
        arg
        for index, arg in enumerate(flags)
        if not arg.startswith("-")
        and (index == 0 or not flags[index - 1].startswith("-") or "=" in flags[index - 1])
    ]
    options = PipelineOptions(flags)
    try:
        known = options.get_all_options(retain_unknown_options=False)
        everything = options.get_all_options(retain_unknown_options=True)
    except SystemExit as error:  # Beam's own parser exits on a bad value
        raise UsageError(f"invalid Beam flag value in: {' '.join(flags)}") from error
    return strays + sorted(f"--{name}" for name in everything if name not in known)


def _prepare_azure_tables(tables: azure_tables.AzureTables) -> None:
    """Creates the tables now: a bad credential fails here, not in a worker."""
    from azure.core.exceptions import AzureError

    try:
        tables.create_all()
    except AzureError as error:
        raise UsageError(
            f"cannot reach Azure Table Storage in account {tables.access.account}: "
            + describe(error)
        ) from error


def _count_images(
    corpus_root: str, corpus_version: str, may_be_empty: bool = False
) -> tuple[int, int]:
    """(files, distinct images to process) of the version, from one manifest read."""
    for table in schemas.TABLES:
        try:
            delta.check_not_legacy(delta.location(corpus_root, table))
        except delta.LegacyTableError as error:
            raise UsageError(str(error).replace("ROOT", corpus_root)) from error
    if legacy_answer_files(corpus_root):
        raise UsageError(
            f"{corpus_root} keeps API answers of an older release under cache/api: run "
            f"`imaginem migrate --corpus {corpus_root}` once to move them into the results table"
        )
    manifest = manifest_rows(corpus_root, corpus_version, IMAGE_COLUMNS)
    if not manifest.num_rows and not may_be_empty:
        raise UsageError(
            f"corpus version {corpus_version!r} not found under {corpus_root}: "
            f"run `imaginem ingest DROP_DIR --corpus {corpus_root} --version {corpus_version}` "
            "first"
        )
    return manifest.num_rows, len(hashes_of(manifest))


def _check_runner_options(flags: list[str]) -> None:
    """Raises UsageError for a runner Beam does not know, a Beam flag with a value Beam
    cannot parse, or a negative worker count."""
    options = PipelineOptions(flags)
    try:
        runner = options.view_as(StandardOptions).runner
        workers = options.view_as(DirectOptions).direct_num_workers
    except SystemExit as error:  # Beam's own parser exits on a bad value
        raise UsageError(f"invalid Beam flag value in: {' '.join(flags)}") from error
    if runner is not None:
        try:
            create_runner(runner)
        except (ValueError, ImportError) as error:
            raise UsageError(f"--runner {runner}: {error}") from error
    if workers < 0:
        raise UsageError(f"--direct_num_workers must be 0 (every core) or more, got {workers}")


def _chosen_apis(steps: list[Step], settings: Mapping[type, Any]) -> dict[str, Api]:
    """Step -> the API its settings chose, for the run's steps that run on one."""
    return {
        step.name: api
        for step in steps
        if step.settings is not None and (api := chosen_api(settings[step.settings]))
    }


def _recompute(requested: str, steps: list[Step]) -> frozenset[str]:
    names = [name.strip() for name in requested.split(",") if name.strip()]
    if names == ["all"]:
        return frozenset(step.name for step in steps)
    unknown = sorted(set(names) - {step.name for step in steps})
    if unknown:
        raise UsageError(
            f"--recompute names step(s) this run does not include: {', '.join(unknown)}; "
            f"the run's steps are {','.join(step.name for step in steps)} (or 'all')"
        )
    return frozenset(names)


def result_plan(
    context: StepContext,
    steps: list[Step],
    recompute: frozenset[str],
    apis: Mapping[str, Api] | None = None,
) -> ResultPlan:
    """Fingerprints of the run's stored steps (version, parameters and upstream
    fingerprints), and of the API answers behind the steps that run on an API."""
    fingerprints: dict[str, str] = {
        answer_step(step): answer_store(context.corpus_root, step, api).fingerprint
        for step, api in (apis or {}).items()
    }
    for step in steps:
        if step.parameters is None:
            continue
        upstream = [fingerprints[d] for d in dependencies(step) if d in fingerprints]
        fingerprints[step.name] = fingerprint(
            step.name, step.version, step.parameters(context), upstream
        )
    return ResultPlan(
        order=tuple(step.name for step in steps),
        fingerprints=fingerprints,
        dependencies={step.name: dependencies(step) for step in steps},
        needs_pixels=frozenset(step.name for step in steps if step.needs_pixels),
        hands_on=frozenset(step.name for step in steps if step.hands_on),
        recompute=recompute,
    )


def plan_run(argv: list[str] | None, watching: bool = False) -> RunPlan:
    """Parses and validates a run's command line (or a watch's: its version may be
    empty so far).

    Raises:
        UsageError: anything that would make the run fail or do the wrong thing.
    """
    pre_args, _ = _pre_parser().parse_known_args(argv)
    if pre_args.step_module and os.getcwd() not in sys.path:
        # Like `python -m`: a step module in the working folder is importable.
        sys.path.insert(0, os.getcwd())
    try:
        registry = load_registry(pre_args.step_module)
    except StepDefinitionError as error:
        raise UsageError(str(error)) from error
    args, beam_flags = build_parser(registry, watching).parse_known_args(argv)
    try:
        azure_options.check_beam_flags(beam_flags)
    except ValueError as error:
        raise UsageError(str(error)) from error
    # Creating the runner first imports its module, and with it its options class.
    _check_runner_options(beam_flags)
    unknown = unknown_beam_flags(beam_flags)
    if unknown:
        raise UsageError(
            f"unrecognised flag(s): {' '.join(unknown)}; see `imaginem run --help` "
            "and Apache Beam's pipeline options"
        )
    try:
        paths.check_version(args.version)
        steps = resolve_steps(parse_definition(args.steps), registry)
    except (paths.UnsafePathError, StepDefinitionError) as error:
        raise UsageError(str(error)) from error
    try:
        settings = step_options.step_settings(args, steps)
        corpus_root = storage.absolute_root(args.corpus)
        azure = azure_options.resolve(args, corpus_root)
        api = api_options.resolve(args, _chosen_apis(steps, settings))
    except ValueError as error:
        raise UsageError(str(error)) from error
    beam_flags = beam_flags + azure_options.beam_flags_for(azure.access)
    # Workers import `transforms` before they unpickle any step (see its docstring).
    beam_flags.append("--beam_plugin=transforms")
    # Storage helpers run here, before the pipeline: give Beam's filesystems their options.
    FileSystems.set_options(PipelineOptions(beam_flags))
    if azure.tables is not None:
        try:
            azure_tables.check_property_names([s.name for s in registry.values() if s.result_type])
        except ValueError as error:
            raise UsageError(str(error)) from error
    files, images = _count_images(corpus_root, args.version, may_be_empty=watching)
    context = StepContext(
        corpus_root=corpus_root,
        corpus_version=args.version,
        settings=settings,
        expected_images=files,
        step_columns={s.name: s.result_type for s in registry.values() if s.result_type},
        azure_tables=azure.tables,
        api=api.settings if api else None,
        run_steps=tuple(step.name for step in steps),
        step_versions={step.name: step.version for step in steps},
        result_store=ResultStore(corpus_root, azure.access),
    )
    try:
        recompute = _recompute(args.recompute, steps)
        plan = result_plan(context, steps, recompute, api.apis if api else None)
        context = dataclasses.replace(context, results=plan)
        transforms = [step.build(context) for step in steps]
        specs = [step.transform_spec(context) for step in steps if step.transform_spec]
    except ValueError as error:
        raise UsageError(str(error)) from error
    options = PipelineOptions(beam_flags)
    if local_runner.uses_default_runner(options):
        options = local_runner.with_local_defaults(options, beam_flags)
    return RunPlan(
        context,
        steps,
        transforms,
        options,
        beam_flags,
        api,
        tuple(specs),
        dry_run=args.dry_run,
        summary_json=args.summary_json,
        images=images,
    )


def _remove_abandoned_outputs(plan: RunPlan) -> None:
    """Files killed writers left: table files no commit took, and half-written
    transform files (which this run writes again)."""
    context = plan.context
    orphans = sum(
        delta.remove_orphans(delta.location(context.corpus_root, table)) for table in schemas.TABLES
    )
    if orphans:
        LOGGER.warning("removed %d table file(s) that interrupted writers left behind", orphans)
    if not plan.transform_specs or not storage.is_local(context.corpus_root):
        return
    for set_path in set_paths(context.corpus_root, context.corpus_version):
        for spec in plan.transform_specs:
            folder = paths.transform_set_prefix(
                context.corpus_root,
                spec.transform_name,
                spec.transform_version,
                set_path,
                context.corpus_version,
            )
            storage.remove_abandoned_partials(folder)


def prepare_outputs(plan: RunPlan) -> None:
    """Registers the run's transform versions and creates its Azure tables.

    Kept out of `plan_run`, which only reads: `--dry-run` and `imaginem diff` write
    nothing.

    Raises:
        UsageError: a transform version taken by other settings, or Azure unreachable.
    """
    context = plan.context
    if context.azure_tables is not None:
        _prepare_azure_tables(context.azure_tables)
    for spec in plan.transform_specs:
        try:
            register_transform(context.corpus_root, spec)
        except ValueError as error:
            raise UsageError(str(error)) from error
    _remove_abandoned_outputs(plan)
    if context.azure_tables is not None:
        azure_tables.upsert(
            context.azure_tables.table_client(azure_tables.IMAGE_TRANSFORMS),
            [
                azure_tables.transform_entity(transform_row(spec), context.corpus_root)
                for spec in plan.transform_specs
            ],
        )


def _labels(transforms: list[beam.PTransform], steps: list[Step]) -> list[str]:
    """CamelCase labels from the transforms' class names, unique per graph."""
    labels, seen = [], set()
    for transform, step in zip(transforms, steps, strict=False):
        label = type(transform).__name__
        if label in seen:
            label = f"{label}[{step.name}]"
        seen.add(label)
        labels.append(label)
    return labels


def build_graph(pipeline: beam.Pipeline, plan: RunPlan):
    """ReadCorpus, then each step in order, then the terminal step writes the tables.

    Records shed their pixels before the first step after which no step needs them,
    so that they cross workers light. A step's side outputs are kept for the later
    steps that declare them as side inputs.

    Returns:
        The terminal step's output.
    """
    context = plan.context
    corpus = pipeline | "ReadCorpus" >> ReadCorpus(
        context.corpus_root,
        context.corpus_version,
        context.results,
        context.result_store,
        workers=_local_workers(plan.pipeline_options),
    )
    records, errors, side_outputs = run_steps(plan, corpus)
    all_errors = errors | "CollectErrors" >> beam.Flatten()
    terminal_step, terminal_label, terminal_transform = _labelled(plan)[-1]
    terminal_input = {
        **_side_inputs(terminal_step, side_outputs),
        RECORDS: records,
        ERRORS: all_errors,
    }
    return terminal_input | terminal_label >> terminal_transform


def _local_workers(options: PipelineOptions) -> int:
    """The local runner's worker processes; 0 on other runners (unknown)."""
    if not local_runner.uses_default_runner(options):
        return 0
    return options.view_as(DirectOptions).direct_num_workers or os.cpu_count() or 1


def _labelled(plan: RunPlan) -> list[tuple[Step, str, beam.PTransform]]:
    return list(zip(plan.steps, _labels(plan.transforms, plan.steps), plan.transforms, strict=True))


def run_steps(plan: RunPlan, source: Mapping[str, beam.PCollection]):
    """Every step but the terminal one, in order, on the records of `source`.

    Returns:
        (records, the errors of the source and of each step, side outputs by tag).
    """
    records, errors = source[RECORDS], [source[ERRORS]]
    side_outputs = {tag: source[tag] for tag in source if tag not in (RECORDS, ERRORS)}
    with_pixels = True
    steps = _labelled(plan)[:-1]
    for index, (step, label, transform) in enumerate(steps):
        if with_pixels and not any(later.needs_pixels for later, _, _ in steps[index:]):
            records = records | "ReleasePixels" >> beam.Map(ImageRecord.without_pixels)
            with_pixels = False
        step_input = {**_side_inputs(step, side_outputs), RECORDS: records}
        outputs = (step_input if step.side_inputs else records) | label >> transform
        records = outputs[RECORDS]
        errors.append(outputs[ERRORS])
        side_outputs.update({tag: outputs[tag] for tag in step.side_outputs})
    return records, errors, side_outputs


def _side_inputs(step: Step, side_outputs: Mapping[str, beam.PCollection]) -> dict:
    """The side outputs a step reads, of those the run has."""
    return {tag: side_outputs[tag] for tag in step.side_inputs if tag in side_outputs}


def prepare_models(plan: RunPlan) -> None:
    """One-time model conversions into the local cache, before any worker needs them."""
    for transform in plan.transforms:
        prepare = getattr(transform, "prepare", None)
        if prepare is not None:
            prepare()


def start(plan: RunPlan) -> PipelineResult:
    """Builds the graph for a validated plan, runs it and waits for it."""
    prepare_models(plan)
    local = local_runner.uses_default_runner(plan.pipeline_options)
    if local:
        pipeline = beam.Pipeline(
            runner=local_runner.local_runner(plan.pipeline_options),
            options=plan.pipeline_options,
        )
    else:
        pipeline = beam.Pipeline(options=plan.pipeline_options)
    build_graph(pipeline, plan)
    quota = plan.api.quota if plan.api else None
    LOGGER.info(
        "Processing %d images of %s version %s with steps %s",
        plan.context.expected_images,
        plan.context.corpus_root,
        plan.context.corpus_version,
        ",".join(plan.step_names),
    )
    if quota is not None:
        LOGGER.info(
            "Holding API requests to %s with the quota service at %s", quota.rate, quota.url
        )
    elif plan.api is not None and plan.api.settings.quota_url:
        LOGGER.info("Holding API requests with the quota server at %s", plan.api.settings.quota_url)
    # The job's quota service lives exactly as long as the pipeline.
    with (
        quota if quota is not None else contextlib.nullcontext(),
        _on_local_runner(plan) if local else contextlib.nullcontext(),
    ):
        if quota is not None:
            _check_advertised(quota.url)
        result = pipeline.run()
        result.wait_until_finish()
    return result


def _check_advertised(url: str) -> None:
    """The driver asks its own quota service at the address workers are given."""
    try:
        served_rate(url)
    except QuotaUnavailableError as error:
        raise UsageError(
            f"{error}: give workers a name of this machine they can reach with "
            "--api-quota-advertise"
        ) from None


@contextlib.contextmanager
def _on_local_runner(plan: RunPlan) -> Iterator[None]:
    """What the local runner's workers allow while they run: progress on this console
    (they inherit its environment) and a quiet Ctrl-C."""
    steps = [step for step in plan.step_names if step != StepName.PIPELINE_OUTPUT]
    with show_progress(steps, plan.images), local_runner.interrupted_quietly():
        yield


def run(argv: list[str] | None = None) -> PipelineResult:
    """Entry point: validates `argv`, runs the pipeline, returns its result.

    Raises:
        UsageError: before the pipeline starts, for any invalid input.
    """
    plan = plan_run(argv)
    prepare_outputs(plan)
    return start(plan)
