"""Stage `point_timing` (a search): every point, the teacher and the CE baselines measured as the
benchmark stage measures a single run's models (compress.measure.suite: figures on the report
split, latency interleaved in one session of fresh processes, so points of different students
are timed under the same conditions); the other runtimes beside ONNX Runtime. Writes
points/measured.json; the choice stage reads it."""
from __future__ import annotations

from compress.core.config import Config
from compress.core.roster import BASELINE, MEASURED, POINTS, TEACHER
from compress.core.stage import Context, Stage
from compress.measure.suite import benchmark_onnx


class PointTimingStage(Stage):
    name = "point_timing"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "bench")

    def inputs(self, cfg: Config) -> list[str]:
        return [POINTS]  # it lists every file with its digest

    def outputs(self, cfg: Config) -> list[str]:
        return [MEASURED]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, run, data = ctx.cfg, ctx.run, ctx.data
        index = run.read_json(POINTS)
        files = {TEACHER: run.path(index["teacher"]), **{n: run.path(p["onnx"]) for n, p in index["points"].items()},
                 **{n: run.path(rel) for n, rel in index["baselines"].items()}}
        # what each step cost, as a single run pairs its models: a student against the teacher and its CE
        # twin, every other point against the point it was made from
        points = index["points"]
        pairs = tuple((n.removesuffix(f"_{BASELINE}"), n) for n in index["baselines"])
        pairs += tuple((n, TEACHER) for n, p in points.items() if p["steps"] == 0 and p["fp32"])
        pairs += tuple((n, p["source"]) for n, p in points.items() if p.get("source"))
        split = data.report_split
        measured = benchmark_onnx(files, data.inputs(split, cfg.data).numpy(), data.split(split).labels.numpy(),
                                  data.classes, cfg.bench, reference=TEACHER, root=run.root, pairs=pairs)
        run.write_json(MEASURED, measured)
        return {"models": len(files), "contention": measured["benchmark"]["contention"]}
