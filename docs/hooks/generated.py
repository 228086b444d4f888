"""MkDocs hook: the pages that must never drift from the code are generated from it at build time.

- `<!-- config-reference -->`: every config key, its default and the reason for it, from the
  field definitions in compress.core.config (what `compress config` prints);
- `<!-- module-map -->`: every module of the package by layer, with the first line of its
  docstring, read from the source files (nothing heavy is imported).
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository root is the package
LAYERS = ("pipeline", "stages", "gate", "methods", "methods/kd", "reporting", "measure", "exports", "core")


def _allowed(key: str) -> str:
    """The key's choices or bounds, as its field declares them."""
    from compress.core.config import _fields, choices
    given = choices(key)
    if given:
        return " \\| ".join(f"`{c}`" for c in given)
    bounds = []
    for limit in _fields()[key][1].metadata:
        for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "at least")):
            value = getattr(limit, name, None)
            if value is not None:
                bounds.append(f"{sign} {value}" + (" items" if name == "min_length" else ""))
    return ", ".join(bounds)


def config_reference() -> str:
    from compress.core.config import Config, get_key, key_reasons, valid_keys
    cfg, reasons = Config(), key_reasons()
    rows, section = [], None
    for key in valid_keys():
        head = key.split(".")[0] if "." in key else "(top level)"
        if head != section:
            section = head
            rows.append(f"\n## `{head}`\n\n| key | default | allowed | why |\n| --- | --- | --- | --- |")
        reason = reasons.get(key, "").replace("|", "\\|")
        rows.append(f"| `{key}` | `{json.dumps(get_key(cfg, key))}` | {_allowed(key)} | {reason} |")
    return "\n".join(rows).strip()


def _first_line(path: Path) -> str:
    doc = " ".join((ast.get_docstring(ast.parse(path.read_text())) or "").split("\n\n")[0].split())
    sentence = doc.split(". ")[0]
    return sentence if sentence.endswith((".", ":")) else sentence + "."


def module_map() -> str:
    out = []
    for layer in LAYERS:
        folder = ROOT / layer
        out.append(f"\n### `{layer}/`\n\n{_first_line(folder / '__init__.py')}\n\n| module | what it does |\n| --- | --- |")
        for path in sorted(folder.glob("*.py")):
            if path.name != "__init__.py":
                out.append(f"| `{path.name}` | {_first_line(path).replace('|', '/')} |")
    return "\n".join(out).strip()


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- config-reference -->" in markdown:
        markdown = markdown.replace("<!-- config-reference -->", config_reference())
    if "<!-- module-map -->" in markdown:
        markdown = markdown.replace("<!-- module-map -->", module_map())
    return markdown
