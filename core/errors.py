"""Errors that name the file, the scene and the fix (STYLE.md, "errors that say what to do")."""

from __future__ import annotations

from os import PathLike


class TttkdError(Exception):
    """Base class for every error this project raises on purpose."""


class DatasetError(TttkdError, ValueError):
    """Bad or missing dataset input: says which file, which scene and what to do about it."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | PathLike[str] | None = None,
        scene: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = None if file is None else str(file)
        self.scene = scene
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.scene is not None:
            parts.append(f"scene {self.scene}")
        if self.file is not None:
            parts.append(f"file {self.file}")
        where = (": ".join(parts) + ": ") if parts else ""
        text = f"{where}{self.problem}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def __reduce__(self):  # keep the keyword-only fields across Dask/pickle boundaries
        return (_rebuild_dataset_error, (self.problem, self.file, self.scene, self.fix))


def _rebuild_dataset_error(
    problem: str, file: str | None, scene: str | None, fix: str | None
) -> DatasetError:
    return DatasetError(problem, file=file, scene=scene, fix=fix)
