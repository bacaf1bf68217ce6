"""`imaginem diff`: what changed between two corpus versions, and what the newer still needs."""

from __future__ import annotations

import dataclasses
from collections import Counter

from beam_pipeline.run import RunPlan
from transforms.corpus.read import manifest_rows


@dataclasses.dataclass(frozen=True)
class VersionDiff:
    """Files by path: in the new version only, the old only, both with other or same bytes."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: list[str]


def _contents(corpus_root: str, corpus_version: str) -> dict[str, str]:
    table = manifest_rows(corpus_root, corpus_version, ("source_path", "image_sha256"))
    if not table.num_rows:
        return {}
    return dict(zip(*(column.to_pylist() for column in table.columns), strict=True))


def diff_versions(corpus_root: str, old: str, new: str) -> VersionDiff:
    before, after = _contents(corpus_root, old), _contents(corpus_root, new)
    both = sorted(before.keys() & after.keys())
    return VersionDiff(
        added=sorted(after.keys() - before.keys()),
        removed=sorted(before.keys() - after.keys()),
        changed=[path for path in both if before[path] != after[path]],
        unchanged=[path for path in both if before[path] == after[path]],
    )


def _stored(plan: RunPlan) -> tuple[set[str], dict[str, set[str]], list[str]]:
    """The version's distinct images, the steps stored for each, and the steps computed."""
    context = plan.context
    hashes = {sha for sha in _contents(context.corpus_root, context.corpus_version).values() if sha}
    stored = context.result_store.stored_steps(context.results, hashes)
    computed = [s for s in context.results.order if s in context.results.fingerprints]
    return hashes, stored, computed


def needed_results(plan: RunPlan) -> Counter:
    """Per step of the plan, how many distinct images of its version would be computed."""
    hashes, stored, computed = _stored(plan)
    needed: Counter = Counter({step: 0 for step in computed})
    for sha in hashes:
        pending = plan.context.results.pending(stored.get(sha, ()))
        needed.update(step for step in pending if step in computed)
    return needed


def stored_results(plan: RunPlan) -> Counter:
    """Per step of the plan, how many distinct images of its version have a stored result."""
    hashes, stored, computed = _stored(plan)
    return Counter({step: sum(step in stored.get(sha, ()) for sha in hashes) for step in computed})


def describe(diff: VersionDiff, old: str, new: str, needed: Counter, images: int) -> str:
    lines = [
        f"{new} against {old}: {len(diff.added)} added, {len(diff.removed)} removed, "
        f"{len(diff.changed)} changed, {len(diff.unchanged)} unchanged"
    ]
    for name, paths in (
        ("added", diff.added),
        ("removed", diff.removed),
        ("changed", diff.changed),
    ):
        lines.extend(f"  {name:<8} {path}" for path in paths)
    lines.append(f"Results {new} still needs ({images} distinct images):")
    lines.extend(f"  {step:<22} {count}" for step, count in needed.items())
    return "\n".join(lines)
