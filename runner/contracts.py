"""The contracts as files: the output Arrow schema and the job spec JSON Schema.

``make schemas`` (``python -c "from runner.contracts import main; main()"``) writes them into
``schemas/`` and ``docs/spec.md``; a test fails when the files and the code disagree, so outside tools
can trust the files. Nothing imports this module at run time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runner.schemas import RESULT_SCHEMA
from runner.spec import json_schema

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


def result_schema_json() -> dict[str, object]:
    """The output schema as JSON: column name, Arrow type and nullability."""
    return {
        "title": "bedrock-batch results.parquet columns (kept input columns follow)",
        "notes": [
            "id: string, or the [columns] id column's integer type when it holds integers",
            "content, tool_input: JSON text (the answer's content blocks; the first tool_use block's input)",
            "lane: on_demand | batch, or emulated_on_demand | emulated_batch for a run --emulate dry run",
        ],
        "columns": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in RESULT_SCHEMA],
    }


def spec_reference() -> str:
    """``docs/spec.md``: every spec key with its type, default and help, from the same source."""
    schema = json_schema()
    lines = [
        "# Job spec reference",
        "",
        "Generated from `runner/spec.py` by `make schemas`; a test keeps it current. The same facts as",
        "`schemas/job_spec.schema.json`. CLI flags override the keys they name (`run --help`).",
        "",
        "**Paths** in a spec (`[job] input`, `[job] output`, `[output] prices`) are relative to the",
        "directory of the spec file, not to where the command runs, so `jobs/x.toml` with",
        '`input = "../data/x.parquet"` reads `data/x.parquet` of the repository from anywhere; `s3://` URIs',
        "and absolute paths are used as written. `--input` and `--output` on the command line are relative",
        "to the working directory. Errors name the absolute path that was tried.",
        "",
        "**Templates** (`[columns] template`) fill `{column}` placeholders per row (Python's `str.format`",
        "syntax); write `{{` and `}}` for a literal `{` or `}`, e.g. `'Answer as JSON: {{\"label\": ...}}'`.",
        "",
        "**Region**: `[model] region` (or `run --region`), else `AWS_REGION`, else `AWS_DEFAULT_REGION`,",
        "else the `region` of the AWS profile (`--profile`, else `AWS_PROFILE`, else `default`) in",
        "`~/.aws/config`, else `us-east-1`: the order of the AWS CLI and boto3.",
        "",
    ]
    for section, body in schema["properties"].items():
        required = set(body.get("required", []))
        lines += [f"## [{section}]", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, prop in body["properties"].items():
            kind = prop["type"] if isinstance(prop["type"], str) else " or ".join(prop["type"])
            if "enum" in prop:
                kind = " \\| ".join(f"`{v}`" for v in prop["enum"])
            default = "**required**" if key in required else f"`{json.dumps(prop.get('default'))}`"
            lines.append(f"| `{key}` | {kind} | {default} | {prop['description']} |")
        lines.append("")
    return "\n".join(lines)


DOCS_DIR = SCHEMAS_DIR.parent / "docs"


def rendered() -> dict[str, str]:
    """File name -> content, exactly as ``schemas/`` should hold it."""
    return {
        "job_spec.schema.json": json.dumps(json_schema(), indent=2) + "\n",
        "results.schema.json": json.dumps(result_schema_json(), indent=2) + "\n",
    }


def main() -> int:
    SCHEMAS_DIR.mkdir(exist_ok=True)
    for name, text in rendered().items():
        (SCHEMAS_DIR / name).write_text(text, encoding="utf-8")
        print(f"wrote schemas/{name}")
    DOCS_DIR.mkdir(exist_ok=True)
    (DOCS_DIR / "spec.md").write_text(spec_reference(), encoding="utf-8")
    print("wrote docs/spec.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
