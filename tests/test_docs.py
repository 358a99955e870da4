"""Documentation generated from code stays in step with the code."""

from pathlib import Path

from lorakit.train.config import markdown_reference

REPO = Path(__file__).resolve().parents[1]


def test_config_reference_in_docs_is_the_schema():
    docs = (REPO / "docs" / "experiments.md").read_text()
    assert markdown_reference() in docs, (
        "docs/experiments.md's config table differs from the schema; regenerate it with "
        "`python -c 'from lorakit.train.config import markdown_reference; print(markdown_reference())'`")
