"""API answers kept in the result store, so no image is ever sent twice for the same answer.

An answer is a result like any other, in the `results` table: its step is
`<step>:answer` and its fingerprint hashes the backend and the model version, so a
re-run of the same corpus version, or a new version that repeats images, finds it and
makes no call. The answers of each request are committed the moment the API answers,
before the results go on. A refusal of the image itself is stored as well; failures
of the request (bad key, outage) are not.

The answer is stored before the step's own options apply (`--classification-top-k`,
`--ocr-min-score`), so changing those needs no new call: the step's result gets a new
fingerprint and is made again from the stored answer. A run reads the answers with
the other stored results, when it reads the corpus (`ReadCorpus`), and finds an
image's answer in its record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow.dataset as pads

from transforms import paths
from transforms.io import storage
from transforms.records import ImageRecord
from transforms.tables import delta
from transforms.tables.result_store import ResultStore, decode, fingerprint, result_row

_ANSWER = ":answer"  # step names are identifiers, so this never meets a real step


def answer_step(step: str) -> str:
    """The results-table step under which the answers behind `step` are kept."""
    return f"{step}{_ANSWER}"


@dataclasses.dataclass(frozen=True)
class StoredAnswer:
    """An image's answer in neutral form, with the model version the API reported.

    `refused` holds the API's status and message (`{"status", "message"}`) when it
    refused the image itself (too small, unreadable): asking again would get the
    same answer, so it is kept too.
    """

    model: str
    answer: Any
    refused: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        stored = {"model": self.model, "answer": self.answer}
        if self.refused is not None:
            stored["refused"] = self.refused
        return stored

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> StoredAnswer:
        return cls(stored["model"], stored["answer"], stored.get("refused"))


@dataclasses.dataclass(frozen=True)
class AnswerStore:
    """The answers of one (step, backend, model version) in one corpus's result store."""

    corpus_root: str
    step: str
    backend: str
    model_version: str

    @property
    def key(self) -> str:
        return answer_step(self.step)

    @property
    def fingerprint(self) -> str:
        parameters = {"backend": self.backend, "model": self.model_version}
        return fingerprint(self.key, "1", parameters)

    @property
    def _results(self) -> ResultStore:
        return ResultStore(self.corpus_root)

    def _mine(self) -> pads.Expression:
        return (pads.field("step") == self.key) & (pads.field("fingerprint") == self.fingerprint)

    def get(self, record: ImageRecord) -> StoredAnswer | None:
        """The answer read with the image's other stored results, if there is one."""
        stored = record.results.get(self.key)
        return None if stored is None else StoredAnswer.from_dict(stored)

    def put(self, answers: Mapping[str, StoredAnswer], corpus_version: str) -> None:
        """Commits answers by image SHA-256, all at once; a second copy is harmless."""
        rows = [
            result_row(sha, self.key, "1", self.fingerprint, answer.to_dict(), corpus_version)
            for sha, answer in answers.items()
        ]
        if rows:
            self._results.append(rows, corpus_version)

    def get_many(self, hashes: Iterable[str]) -> dict[str, StoredAnswer]:
        """Stored answers by image SHA-256 (a direct lookup, outside a pipeline)."""
        wanted = self._mine() & pads.field("image_sha256").isin(list(hashes))
        table = delta.read(self._results.location, ("image_sha256", "result"), wanted)
        if not table.num_rows:
            return {}
        return {
            sha: StoredAnswer.from_dict(decode(result))
            for sha, result in zip(*(c.to_pylist() for c in table.columns), strict=True)
        }

    def stored_hashes(self) -> set[str]:
        """Hashes of every image with a stored answer (for `--dry-run`)."""
        table = delta.read(self._results.location, ("image_sha256",), self._mine())
        return set(table.column(0).to_pylist()) if table.num_rows else set()


# Where releases before the result store kept answers, one JSON file per image.
LEGACY_ANSWERS = ("cache", "api")


def legacy_answer_files(corpus_root: str) -> list[str]:
    """Answer files of an older release: `cache/api/<step>/<api>/<model>/<sha>.json`."""
    return storage.list_files(paths.join(corpus_root, *LEGACY_ANSWERS), "*/*/*/*.json")


def import_legacy_answers(corpus_root: str) -> int:
    """Moves an older release's answer files into the result store; returns how many.

    The files are deleted once their answers are committed, so running it again
    imports nothing twice.
    """
    files = legacy_answer_files(corpus_root)
    by_store: dict[tuple[str, str, str], dict[str, StoredAnswer]] = {}
    for uri in files:
        step, backend, model_version, name = uri.rsplit("/", 4)[1:]
        answer = StoredAnswer.from_dict(decode(storage.read_bytes(uri)))
        by_store.setdefault((step, backend, model_version), {})[name.removesuffix(".json")] = answer
    for (step, backend, model_version), answers in by_store.items():
        AnswerStore(corpus_root, step, backend, model_version).put(answers, "")
    storage.delete(files)
    return len(files)
