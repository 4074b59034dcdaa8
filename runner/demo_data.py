"""A deterministic demo input: ``make run``, the tests and the benchmarks all use it.

``make_demo_dataset`` writes a Parquet file with ``id`` (``row-000001``...), ``text`` (English-ish
paragraphs of 200 to 3,000 characters), ``audience`` and ``team``, the columns ``jobs/demo.toml``
names. It is fast enough for benchmark sizes (a million rows in seconds): the text of each row is a
slice of one seeded pool of sentences, cut at sentence boundaries, so the per-row work is two random
numbers, a bisect and a slice; rows are written in row groups of 50,000 and never all held at once.

``python -m runner.demo_data PATH [--rows N] [--seed S]`` writes one from the shell.
"""

from __future__ import annotations

import argparse
import bisect
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runner.atomic import atomic_write

DEMO_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("audience", pa.string(), nullable=False),
        pa.field("team", pa.string(), nullable=False),
    ]
)

AUDIENCES = ("general", "expert")
TEAMS = ("search", "ads", "risk", "payments", "infra")
MIN_CHARS, MAX_CHARS = 200, 3_000
ROW_GROUP_ROWS = 50_000

_VOCABULARY = (
    "the a system model data request service region quota token batch latency throughput user team "
    "report result error retry cache prompt answer job queue worker stream file table column row value "
    "price cost budget limit window policy route endpoint profile account network storage index query "
    "measure improve reduce increase observe explain compare deliver support review design build test "
    "deploy monitor scale rotate migrate quickly carefully reliably rarely often usually every each "
    "several many few large small new old internal external daily weekly critical optional simple "
    "complex stable noisy careful efficient expensive cheap early late because while although when "
    "after before during across within between under over through into from with without for of to in"
)
_WORDS = _VOCABULARY.split()
_POOL_SENTENCES = 4_000


def _sentence_pool(rng: random.Random) -> tuple[str, list[int]]:
    """One long text of seeded sentences and the offset where each sentence starts.

    The pool is written twice end to end, so a slice starting anywhere in the first copy always
    has ``MAX_CHARS`` of sentences after it.
    """
    sentences = []
    for _ in range(_POOL_SENTENCES):
        words = rng.choices(_WORDS, k=rng.randint(6, 18))
        sentences.append(" ".join(words).capitalize() + rng.choice((".", ".", ".", "?", "!")))
    text = " ".join(sentences)
    pool = text + " " + text
    starts = [0]
    for sentence in sentences + sentences:
        starts.append(starts[-1] + len(sentence) + 1)
    return pool, starts


def make_demo_dataset(path: str | os.PathLike[str], rows: int = 2000, seed: int = 0) -> Path:
    """Write ``rows`` demo prompts to ``path`` (a Parquet file) and return the path.

    The same ``rows`` and ``seed`` give the same file content. The file is written beside its final
    name and renamed into place, so a killed run never leaves a half-written demo input that the
    next ``make run`` would take for a finished one.
    """
    if rows < 0:
        raise ValueError(f"rows must not be negative, not {rows}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pool, starts = _sentence_pool(rng)
    first_copy = len(starts) // 2
    with atomic_write(out) as fh, pq.ParquetWriter(fh, DEMO_SCHEMA, compression="zstd") as writer:
        for chunk_start in range(0, rows, ROW_GROUP_ROWS) if rows else [0]:
            n = min(ROW_GROUP_ROWS, rows - chunk_start)
            ids, texts, audiences, teams = [], [], [], []
            for i in range(chunk_start + 1, chunk_start + n + 1):
                begin = starts[rng.randrange(first_copy)]
                target = begin + rng.randint(MIN_CHARS, MAX_CHARS)
                # End at the last sentence end within the target, or, if that is too short,
                # at the first sentence end past MIN_CHARS (sentences are shorter than 200).
                end = starts[bisect.bisect_right(starts, target + 1) - 1] - 1
                if end - begin < MIN_CHARS:
                    end = starts[bisect.bisect_left(starts, begin + MIN_CHARS + 1)] - 1
                ids.append(f"row-{i:06d}")
                texts.append(pool[begin:end])
                audiences.append(AUDIENCES[rng.random() < 0.3])
                teams.append(TEAMS[rng.randrange(len(TEAMS))])
            table = pa.Table.from_arrays(
                [pa.array(ids), pa.array(texts), pa.array(audiences), pa.array(teams)],
                schema=DEMO_SCHEMA,
            )
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.demo_data", description=__doc__)
    parser.add_argument("path", help="Parquet file to write")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = make_demo_dataset(args.path, rows=args.rows, seed=args.seed)
    print(f"wrote {args.rows} rows to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
