"""Entry point: ``python -m bench [--quick] [--out DIR] [--only scale,real,profile] [--merge]``.

Full run: bench/results/latest.{md,json} + PNG plots (the committed results). Quick run (CI smoke test, a few
minutes): bench/results/quick/. A partial run (``--only`` some sections): bench/results/partial/, so the committed
full run is never overwritten by a part of one; ``--merge`` also puts its sections into bench/results/latest.*
(the other sections kept, the merge recorded in latest.md). ``--out`` overrides the folder. Timings are reported,
never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench.common import REPO, environment, load_average, log  # noqa: E402

RESULTS = REPO / "bench" / "results"


DEFAULT_SECTIONS = "scale,real,profile,dask,export,scoring,auto,deferred,plan,suspects,combine,stopping"


@dataclass
class Config:
    quick: bool = False
    repeats: int = 5
    # scale workload
    scale_n: int = 1_000_000
    scale_test: int = 200_000
    scale_groupings: list[str] = field(default_factory=lambda: ["hash:16", "hash:64", "kmeans:16"])
    scale_ks: list[int] = field(default_factory=lambda: [4, 16, 64])  # trade-off at scale
    batch_groupings: list[str] = field(default_factory=lambda: ["hash:16", "hash:64", "kmeans:16"])
    batch_k: int = 1000
    touched_ks: list[int] = field(default_factory=lambda: [1, 4, 16, 64, 256, 1024])
    group_sizes: list[int] = field(default_factory=lambda: [10_000, 30_000, 100_000, 300_000, 1_000_000])
    cascade_sizes: list[int] = field(default_factory=lambda: [30_000, 1_000_000])
    cascade_random: int = 100
    cascade_insample: int = 30
    memory_grouping: str = "hash:16"
    # real data sets
    datasets: list[str] = field(default_factory=lambda: ["adult", "credit_default", "diamonds_cut", "diamonds_price",
                                                         "california_housing"])
    ks: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    ks_kmeans: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    n_keys: int = 3
    xgboost: bool = True
    xgb_datasets: list[str] = field(default_factory=lambda: ["adult", "california_housing"])
    # grouping="auto": loss vs rows per hash shard (bench/auto.py)
    auto_datasets: list[str] = field(default_factory=lambda: ["adult", "credit_default", "diamonds_cut",
                                                              "diamonds_price", "california_housing"])
    auto_ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    auto_scale_n: int = 200_000
    # time to no influence (bench/deferred.py)
    deferred_n: int = 1_000_000
    deferred_repeats: int = 25
    # cf.plan on the bundled data (bench/planning.py)
    plan_datasets: list[str] = field(default_factory=lambda: ["adult", "credit_default", "diamonds_cut",
                                                              "diamonds_price", "california_housing"])
    plan_time_budget: float = 300.0
    # cf.suspects vs cleanlab under planted label noise (bench/suspects.py)
    suspects_datasets: list[str] = field(default_factory=lambda: ["adult", "credit_default"])
    suspects_groupings: list[str] = field(default_factory=lambda: ["hash:4", "auto", "auto:off"])  # off: no early stop
    suspects_noise: list[str] = field(default_factory=lambda: ["uniform", "class-conditional"])
    suspects_rates: list[float] = field(default_factory=lambda: [0.05, 0.10])
    suspects_rows: int | None = None  # training rows kept (None: all)
    suspects_draws: int = 3  # draws of the flips for the goal's case (adult, uniform, 10%)
    suspects_params: dict | None = None  # learner_params of the members and of cleanlab's LightGBM
    # combine="auto" on adult's keys, and early stopping per member (bench/stopping.py)
    combine_keys: list[str] = field(default_factory=lambda: ["relationship", "marital-status", "native-country",
                                                             "race"])
    stopping_datasets: list[str] = field(default_factory=lambda: ["adult", "credit_default"])
    stopping_scale_n: int = 1_000_000

    @classmethod
    def quick_config(cls) -> "Config":
        return cls(
            quick=True, scale_n=50_000, scale_test=20_000, scale_groupings=["hash:16", "kmeans:16"], scale_ks=[4, 16],
            batch_groupings=["hash:16"], touched_ks=[1, 16, 256], group_sizes=[10_000, 50_000],
            cascade_sizes=[30_000], cascade_random=20, cascade_insample=10,
            datasets=["adult", "california_housing"], ks=[4, 16], ks_kmeans=[16], n_keys=1, xgboost=False,
            auto_datasets=["adult"], auto_ks=[1, 2, 4], auto_scale_n=0,
            deferred_n=100_000, deferred_repeats=9,
            plan_datasets=["adult"], plan_time_budget=30.0,
            suspects_datasets=["adult"], suspects_groupings=["hash:4"], suspects_noise=["uniform"],
            suspects_rates=[0.10], suspects_rows=4000, suspects_params={"num_iterations": 30}, suspects_draws=1,
            combine_keys=["race"], stopping_datasets=["adult"], stopping_scale_n=0,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, a few minutes (CI smoke test)")
    ap.add_argument("--out", default=None, help="output folder (default bench/results for a full run, "
                    "bench/results/quick with --quick, bench/results/partial with --only)")
    ap.add_argument("--only", default=DEFAULT_SECTIONS, help=f"sections to run (comma separated): {DEFAULT_SECTIONS}; opt-in: verify")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per timing (default 5; the issue asks >= 5)")
    ap.add_argument("--scale-n", type=int, default=None, help="rows of the scale workload (default 1M; quick 50k)")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite latest.md and the plots from the latest.json in the output folder")
    ap.add_argument("--merge", action="store_true",
                    help="with --only (full size): also replace those sections in bench/results/latest.* (the "
                         "committed full run), keeping the others")
    a = ap.parse_args(argv)
    sections = {s.strip() for s in a.only.split(",") if s.strip()}
    partial = sections != set(DEFAULT_SECTIONS.split(","))
    if a.merge and (a.quick or a.render or not partial):
        ap.error("--merge puts the sections of a full-size --only run into bench/results/latest.*; it takes --only "
                 "and neither --quick (a smoke test is not a measurement) nor --render")

    cfg = Config.quick_config() if a.quick else Config()
    if a.repeats:
        cfg.repeats = a.repeats
    if a.scale_n:
        cfg.scale_n = a.scale_n
    out = Path(a.out) if a.out else RESULTS / ("quick" if a.quick else "partial" if partial and not a.render else "")
    out.mkdir(parents=True, exist_ok=True)
    if a.render:
        import json

        from bench.report import write_markdown, write_plots

        results = json.loads((out / "latest.json").read_text())
        write_markdown(results, out / "latest.md", write_plots(results, out))
        log("rewrote latest.md and the plots from latest.json")
        return 0

    t0 = time.perf_counter()
    env = environment()
    cmd = "python -m bench" + (" --quick" if a.quick else "") + (f" --only {a.only}" if a.only != DEFAULT_SECTIONS else "")
    log(f"clusterforget bench ({'quick' if a.quick else 'full'}): {env['cpu']}, {env['cores']} cores, "
        f"{env['memory_gib']} GiB; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f"; seed {env['seed']}")
    results: dict = {"quick": cfg.quick, "command": cmd, "environment": env, "config": asdict(cfg)}

    if "scale" in sections:
        from bench.scale import run_scale

        results["scale"] = run_scale(cfg)
        if "profile" in sections:
            from bench.profiling import run_profiles

            log("profiling the forget and predict paths")
            results["profile"] = run_profiles(results["scale"], cfg)
        for k in [k for k in results["scale"] if k.startswith("_")]:
            del results["scale"][k]
    if "real" in sections:
        from bench.real import run_real

        results["real"] = run_real(cfg)
    if "dask" in sections:  # needs clusterforget[dask]: skipped, saying so, without it
        try:
            import distributed  # noqa: F401
        except ImportError:
            log("dask: skipped (pip install 'clusterforget[dask]' to measure the Dask backend)")
        else:
            from bench.cluster import run_cluster

            results["dask"] = run_cluster(cfg)
    if "export" in sections:
        from bench.export import run_export

        results["export"] = run_export(cfg)
    if "scoring" in sections:
        from bench.scoring import run_scoring

        results["scoring"] = run_scoring(cfg)
    if "verify" in sections:
        from bench.verify import run_verify

        results["verify"] = run_verify(cfg)
    if "auto" in sections:
        from bench.auto import run_auto

        results["auto"] = run_auto(cfg)
    if "deferred" in sections:
        from bench.deferred import run_deferred

        results["deferred"] = run_deferred(cfg)
    if "plan" in sections:
        from bench.planning import run_planning

        results["plan"] = run_planning(cfg)
    if "suspects" in sections:
        from bench.suspects import run_suspects

        results["suspects"] = run_suspects(cfg)
    if "combine" in sections:
        from bench.stopping import run_combine

        results["combine"] = run_combine(cfg)
    if "stopping" in sections:
        from bench.stopping import run_stopping

        results["stopping"] = run_stopping(cfg)
    if results.get("scale", {}).get("errors"):
        log("sections that failed: " + ", ".join(results["scale"]["errors"]))

    results["wall_s"] = time.perf_counter() - t0
    results["load_average_at_end"] = load_average()

    from bench.report import write_json, write_markdown, write_plots

    plots = write_plots(results, out)
    write_json(results, out / "latest.json")
    write_markdown(results, out / "latest.md", plots)
    log(f"done in {results['wall_s'] / 60:.1f} min; wrote {out.resolve()}: latest.md, latest.json"
        + "".join(f", {p}" for p in plots))
    if a.merge:
        merged = merge_into(RESULTS, results, sections)
        log(f"merged {', '.join(merged)} into {RESULTS.resolve()}: latest.md, latest.json (the other sections kept)")
    elif partial and not a.out:
        log(f"a partial run (--only {a.only}): bench/results/latest.* untouched; --merge puts it there")
    from bench.report import headline

    for r in headline(results):
        print(f"  {'MET   ' if r['ok'] else 'MISSED'} {r['figure']}: {r['measured']} (target {r['target']})")
    return 0


def merge_into(folder: Path, results: dict, sections: set[str]) -> list[str]:
    """Put the measured ``sections`` of a partial run into ``folder``'s latest.json (the other sections kept, as
    they were), record the merge (command, date, commit, load) and rewrite latest.md and the plots from it."""
    import json

    from bench.report import write_json, write_markdown, write_plots

    base = json.loads((folder / "latest.json").read_text())
    if base.get("quick"):
        raise SystemExit(f"{folder / 'latest.json'} is a quick run's; --merge only merges into a full run")
    merged = sorted(k for k in sections if k in results)
    for k in merged:
        base[k] = results[k]
    env = results["environment"]
    base.setdefault("merged", []).append({"sections": merged, "command": results["command"],
                                          "date_utc": env["date_utc"], "git_commit": env["git_commit"],
                                          "load_average": [env["load_average_at_start"],
                                                           results.get("load_average_at_end")],
                                          "wall_s": results["wall_s"]})
    write_json(base, folder / "latest.json")
    write_markdown(base, folder / "latest.md", write_plots(base, folder))
    return merged


if __name__ == "__main__":
    raise SystemExit(main())
