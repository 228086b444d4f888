"""Regenerate the results page's hymenoptera section from a run, so anyone can reproduce its tables.

Runs (or reuses, when up to date: the stages are cached) the hymenoptera config, then writes the
section between docs/results.md's `<!-- results:start -->` and `<!-- results:end -->` markers: the
benchmark table with 95% intervals on the held-out test split, the paired verdicts, the machine
and how busy it was, and the exact command behind each table.

    python benchmarks/readme_results.py --data ../shared/data/hymenoptera_data [--dry-run]
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import time
from pathlib import Path

from compress.core.documents import Report
from compress.reporting.report import figures_note, headline, markdown_table

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def run(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - t0


def section(report: Report, command: str, seconds: float) -> str:
    env, c = report.environment, report.benchmark.contention
    load = (f"other processes used {c.other_cpu_share:.0%} of the cores while timing"
            if c and c.other_cpu_share is not None else "contention not measured")
    lines = [f"Made by `{command}` ({seconds:.0f} s of this invocation; stages already up to date are reused) on "
             f"{env.cpu} ({env.cores} cores, {', '.join(env.isa)}), {platform.system()}; {load}"
             f"{' — ⚠ busy machine, speed figures not trustworthy' if report.busy() else ''}.", "",
             figures_note(report), "", markdown_table(report).rstrip(), ""]
    lines += [h for h in headline(report)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/hymenoptera_data")
    parser.add_argument("--out", default="runs/readme-hymenoptera")
    parser.add_argument("--dry-run", action="store_true", help="print the section instead of writing docs/results.md")
    args = parser.parse_args()
    command = ["compress", "run", "--config", "configs/hymenoptera-cpu.toml", "--data", args.data, "--out", args.out,
               "--quiet"]
    seconds = run(command)
    report = Report.read(Path(args.out) / "report.json")
    text = section(report, " ".join(command), seconds)
    if args.dry_run:
        print(text)
        return
    page = ROOT / "docs" / "results.md"
    body = page.read_text()
    if START not in body or END not in body:
        raise SystemExit(f"{page} has no {START} ... {END} markers")
    head, rest = body.split(START, 1)
    page.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])
    print(f"{page} results section rewritten from {args.out}/report.json")


if __name__ == "__main__":
    main()
