"""Where a model's starting weights come from, parsed once from `teacher.weights` /
`distill.weights`: `none` (random initialisation), `imagenet` (the model zoo's pretrained
weights) or the path of a local checkpoint."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class WeightsSource:
    kind: Literal["none", "imagenet", "file"]
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> WeightsSource:
        if text in ("", "none"):
            return cls("none")
        if text == "imagenet":
            return cls("imagenet")
        return cls("file", text)

    @property
    def file(self) -> str | None:
        """The checkpoint to read, when the weights come from one (a stage input the cache key covers)."""
        return self.path if self.kind == "file" else None

    def files(self) -> list[str]:
        return [self.path] if self.kind == "file" else []
