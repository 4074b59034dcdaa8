"""The batch lane's memory: ``_job/batch.json``, one entry per shard, saved the moment anything changes.

::

    _job/
      batch.json                  the job key, the S3 prefix, and every shard's journey (ShardState)
      batch/shard-NNNNN.jsonl     a shard's input, until it is in S3
      batch/shard-NNNNN.rows.parquet   what a result row needs and Bedrock does not echo (kept)

Read by the lane (:mod:`runner.batch.lane`) to re-attach after a crash, and by ``status``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.atomic import atomic_write
from runner.batch.shards import Shard
from runner.errors import BatchJobError
from runner.types import Route

if TYPE_CHECKING:
    from runner.state import JobDir

BATCH_FILE = "batch.json"
SHARD_DIR = "batch"
STATE_VERSION = 1
FINAL_STATUSES = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired", "NotFound"})
"""Bedrock's end states, plus ``NotFound``: a job Bedrock no longer knows (its rows run on-demand)."""


@dataclass(eq=False)
class ShardState:
    """One shard's journey; every field is saved in ``_job/batch.json`` the moment it changes."""

    shard: Shard
    model_id: str
    region: str
    job_name: str
    token: str
    input_uri: str
    output_uri: str
    uploaded: bool = False
    create_sent: bool = False
    """A create went out; without ``job_arn`` we cannot know whether Bedrock made the job."""
    job_arn: str | None = None
    status: str | None = None
    message: str | None = None
    submitted_at: float | None = None
    ended_at: float | None = None
    collected: bool = False
    ok: int = 0
    errors: int = 0
    """Records Bedrock answered with an error (they run on-demand)."""
    missing: int = 0
    """Records with no line in the output (job failed, stopped or expired first; they run on-demand)."""

    @property
    def in_flight(self) -> bool:
        return self.job_arn is not None and not self.collected

    @property
    def route(self) -> Route:
        return Route(model_id=self.model_id, region=self.region, geography=self.model_id.split(".", 1)[0])

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "shard"}
        out["shard"] = self.shard.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardState:
        values = dict(data)
        values["shard"] = Shard.from_dict(values["shard"])
        return cls(**values)


@dataclass(eq=False)
class BatchState:
    """``_job/batch.json``: the lane's whole memory, rewritten atomically after every change."""

    job_key: str
    prefix: str
    """``{batch.s3_uri}/{name}-{job_key}``: inputs under ``input/``, Bedrock's outputs under ``output/``."""
    shards: list[ShardState] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> BatchState | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BatchJobError(
                f"{path} is unreadable ({exc}); it records the batch jobs this job submitted, "
                "so restore it rather than delete it (deleting it would submit every shard again)"
            ) from exc
        if data.get("version") != STATE_VERSION:
            raise BatchJobError(
                f"{path} has version {data.get('version')!r}; this runner reads {STATE_VERSION}"
            )
        return cls(
            job_key=data["job_key"],
            prefix=data["prefix"],
            shards=[ShardState.from_dict(s) for s in data["shards"]],
        )

    def save(self, path: Path) -> None:
        """Write, fsync, rename, fsync the directory: the file is the old or the new, never torn."""
        data = {
            "version": STATE_VERSION,
            "job_key": self.job_key,
            "prefix": self.prefix,
            "shards": [s.to_dict() for s in self.shards],
        }
        with atomic_write(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)

    def next_number(self) -> int:
        return max((s.shard.number for s in self.shards), default=-1) + 1


def read_batch_state(work_dir: Path) -> BatchState | None:
    """The batch state of a job's ``_job`` directory, or ``None`` when the job never used the lane."""
    return BatchState.load(work_dir / BATCH_FILE)


def lane_summary(work_dir: Path) -> dict[str, Any] | None:
    """What ``status`` shows of the batch lane: shards by state, records by outcome; ``None`` if unused."""
    state = read_batch_state(work_dir)
    if state is None:
        return None
    jobs: dict[str, int] = {}
    for s in state.shards:
        key = "collected" if s.collected else (s.status or ("submitting" if s.create_sent else "planned"))
        jobs[key] = jobs.get(key, 0) + 1
    return {
        "shards": len(state.shards),
        "jobs": jobs,
        "records": sum(s.shard.records for s in state.shards),
        "in_flight_records": sum(s.shard.records for s in state.shards if not s.collected),
        "ok": sum(s.ok for s in state.shards),
        "to_on_demand": sum(s.errors + s.missing for s in state.shards),
    }


def lane_status(job: JobDir) -> dict[str, Any]:
    """``status``'s view of both lanes: rows with a result per lane, and the batch jobs (or ``None``)."""
    lanes = {"on_demand": 0, "batch": 0}
    latest = job.latest(["lane"])
    if latest.num_rows and "lane" in latest.column_names:
        for item in latest.column("lane").value_counts().to_pylist():
            lanes[str(item["values"] or "on_demand")] = int(item["counts"])
    return {"lanes": lanes, "batch": lane_summary(job.work)}
