"""A finished survey: its tables (long-form frames) and meta, saved as a directory of parquet
tables plus meta.json. The directory is built beside its destination and renamed into place,
so a reader never sees half a survey."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from interp.errors import InterpError
from interp.files import commit_allowed


@dataclass
class Survey:
    tables: dict[str, pd.DataFrame]
    meta: dict

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        check_writable(out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
        except OSError as exc:
            raise InterpError(f"cannot write {out}: {exc.strerror}") from None
        try:
            for name, frame in self.tables.items():
                frame.to_parquet(tmp / f"{name}.parquet", index=False)
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=1, default=str))
            tmp.chmod(0o755)
            commit_allowed()
            old = None
            if out.exists():  # an earlier survey (check_writable refuses anything else)
                old = out.with_name(f".{out.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                out.rename(old)
            tmp.rename(out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise InterpError(f"cannot write {out}: {exc.strerror}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Survey:
        directory = Path(directory)
        if not (directory / "meta.json").is_file():
            raise InterpError(f"{directory} holds no survey (meta.json missing)")
        from interp.survey.saved import read_survey_meta, read_survey_tables

        meta = read_survey_meta(directory)
        tables = read_survey_tables(directory, meta)
        return cls(tables, meta)


def check_writable(out: Path) -> None:
    """Refuse, before any work, to replace something that is not an earlier survey."""
    if (
        out.exists()
        and not (out.is_dir() and (out / "meta.json").is_file())
        and (not out.is_dir() or any(out.iterdir()))
    ):
        raise InterpError(f"{out} exists and holds no survey; choose another --out")
