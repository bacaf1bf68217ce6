"""API answers kept in the corpus, so no image is ever sent twice for the same answer.

An answer is stored under (image SHA-256, step, backend, model version), as
`<root>/cache/api/<step>/<backend>/<model version>/<sha256>.json`: a pure function of
the image's content and the versions, so a re-run of the same corpus version, or a
new version that repeats images, finds it and makes no call. It is written as soon
as the API answers, before the result goes on, and never overwritten. A refusal of
the image itself is stored as well; failures of the request (bad key, outage) are not.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from transforms import paths, storage

CACHE_DIR = "cache"


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

    def to_json(self) -> bytes:
        stored = {"model": self.model, "answer": self.answer}
        if self.refused is not None:
            stored["refused"] = self.refused
        return json.dumps(stored).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StoredAnswer:
        stored = json.loads(data)
        return cls(stored["model"], stored["answer"], stored.get("refused"))


@dataclasses.dataclass(frozen=True)
class AnswerStore:
    """The answers of one (step, backend, model version) under one corpus root."""

    corpus_root: str
    step: str
    backend: str
    model_version: str

    @property
    def folder(self) -> str:
        return paths.join(
            self.corpus_root,
            CACHE_DIR,
            "api",
            paths.check_component(self.step),
            paths.check_component(self.backend),
            paths.check_component(self.model_version),
        )

    def uri(self, image_sha256: str) -> str:
        return paths.join(self.folder, f"{paths.check_component(image_sha256)}.json")

    def get(self, image_sha256: str) -> StoredAnswer | None:
        data = storage.read_if_exists(self.uri(image_sha256))
        return None if data is None else StoredAnswer.from_json(data)

    def put(self, image_sha256: str, answer: StoredAnswer) -> None:
        """Stores the answer unless one is there already (the first one stays)."""
        storage.write_unless_exists(self.uri(image_sha256), answer.to_json)

    def stored_hashes(self) -> set[str]:
        """Hashes of every image with a stored answer (one listing, for `--dry-run`)."""
        return {
            uri.rsplit("/", 1)[-1].removesuffix(".json")
            for uri in storage.list_files(self.folder, "*.json")
        }
