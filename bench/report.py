"""Results: ``latest.json`` (every sample), ``latest.md`` (tables, verdicts, findings) and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .common import PRIMARY, fmt_loss

HERE = Path(__file__).resolve().parent


def _clean(obj: Any) -> Any:
    """JSON-safe copy without the private (``_``-prefixed) objects."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if hasattr(obj, "item"):
        return _clean(obj.item())
    return obj


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_clean(results), indent=1) + "\n")


def _x(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}x"
    return f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def _ms(s: float) -> str:
    return f"{1000 * s:.2f} ms" if s < 0.1 else f"{s:.2f} s"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


# ---------------------------------------------------------------------------------------------- headline
def headline(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure of the issue's target table (and grouping where several are measured)."""
    rows: list[dict[str, Any]] = []
    sc = results.get("scale")
    if sc:
        n = sc["n_rows"]
        base = sc["monolith_retrain"]["median"]
        for spec, f in sc["forget_1"].items():
            rows.append({"figure": f"forget_rows 1 row, retrain now, {spec}", "baseline": f"monolith retrain, {n:,} rows ({base:.2f} s)",
                         "target": ">= 50x", "measured": f"{_x(f['speedup_now'])} ({_ms(f['now']['median'])})",
                         "value": f["speedup_now"], "ok": f["speedup_now"] >= 50})
        for spec, f in sc["forget_1"].items():
            rows.append({"figure": f"forget_rows 1 row, deferred, {spec}", "baseline": "same",
                         "target": ">= 1000x", "measured": f"{_x(f['speedup_deferred'])} ({_ms(f['deferred']['median'])})",
                         "value": f["speedup_deferred"], "ok": f["speedup_deferred"] >= 1000})
        fb = sc["forget_batch"]
        for spec, f in fb["by_grouping"].items():
            rows.append({"figure": f"forget_rows {fb['k']:,} random rows batched, retrain now, {spec}",
                         "baseline": f"{fb['k']:,} monolith retrains (estimated: {fb['k']:,} x one measured)",
                         "target": ">= 500x", "measured": f"{_x(f['speedup_now'])} ({_ms(f['now']['median'])})",
                         "value": f["speedup_now"], "ok": f["speedup_now"] >= 500})
        fg = sc["forget_group"]
        if fg:
            meds = [r["hash16_now"]["median"] for r in fg]
            span = f"{fg[0]['rows']:,}..{fg[-1]['rows']:,} rows"
            rows.append({"figure": f"forget_group (hash:16), {span}", "baseline": "monolith retrain at each size",
                         "target": "<= 10 ms, flat",
                         "measured": " / ".join(_ms(m) for m in meds) + f" (max/min {max(meds) / min(meds):.1f})",
                         "value": max(meds), "ok": max(meds) <= 0.010})
        pr = sc["predict"]
        for name, target in ((k, 0.9 if k.endswith("route") else 0.25) for k in pr if k != "monolith"):
            rows.append({"figure": f"predict throughput, {name}", "baseline": f"monolith ({pr['monolith']['rows_per_s']:,.0f} rows/s)",
                         "target": f">= {target}x", "measured": f"{pr[name]['vs_monolith']:.2f}x ({pr[name]['rows_per_s']:,.0f} rows/s)",
                         "value": pr[name]["vs_monolith"], "ok": pr[name]["vs_monolith"] >= target})
        fm = sc.get("fit_memory")
        if fm:
            rows.append({"figure": f"fit wall time, {fm['grouping']}, {fm['n_rows']:,} rows",
                         "baseline": f"monolith fit ({fm['mono']['fit_s']['median']:.1f} s)", "target": "<= 1.0x",
                         "measured": f"{fm['fit_time_ratio']:.2f}x ({fm['grouped']['fit_s']['median']:.1f} s)",
                         "value": fm["fit_time_ratio"], "ok": fm["fit_time_ratio"] <= 1.0})
            rows.append({"figure": f"peak memory of fit (process peak RSS), {fm['grouping']}",
                         "baseline": f"monolith ({fm['mono']['rss_peak_mb']['median']:,.0f} MiB)", "target": "<= 1.5x",
                         "measured": f"{fm['peak_memory_ratio']:.2f}x ({fm['grouped']['rss_peak_mb']['median']:,.0f} MiB; "
                                     f"fit increment {fm['fit_increment_ratio']:.2f}x)",
                         "value": fm["peak_memory_ratio"], "ok": fm["peak_memory_ratio"] <= 1.5})
    for ds in results.get("real", []):
        if ds["task"] != "binary" or ds["learner"] != "lightgbm":
            continue
        at16 = [s for s in ds["settings"] if s["grouping"] in ("hash", "kmeans") and s["param"] == 16]
        if not at16:
            continue
        best = min(at16, key=lambda s: s["loss"])
        rows.append({"figure": f"accuracy, best grouping at K=16, {ds['name']}",
                     "baseline": f"monolith AUC {ds['monolith']['auc']:.4f}", "target": "loss <= 0.003 AUC",
                     "measured": f"{best['label']} {best['combine']}: {fmt_loss('binary', best['loss'])}",
                     "value": best["loss"], "ok": best["loss"] <= 0.003})
    if results.get("suspects"):
        from bench.suspects import headline_rows

        rows += headline_rows(results["suspects"])
    return rows


# ---------------------------------------------------------------------------------------------- markdown
def settings_table(w, ds: dict[str, Any]) -> None:
    task = ds["task"]
    has_fg = any("forget_group_deferred" in s for s in ds["settings"])
    w(f"| grouping | combine | groups | {PRIMARY[task]} | loss | fit | forget 1 row | speedup |"
      + (" forget_group |" if has_fg else "") + " clustering refit/changed |")
    w("|---" * (9 + has_fg) + "|")
    for s in ds["settings"]:
        v = s["metrics"][PRIMARY[task]]
        fg = f" {_ms(s['forget_group_deferred']['median'])} |" if has_fg else ""
        w(f"| {s['label']} | {s['combine']} | {s['groups']} | {v:,.4f} | {fmt_loss(task, s['loss'])} | "
          f"{s['fit_s']:.2f} s | {_ms(s['forget_1_now']['median'])} | {_x(s['speedup_now'])} |{fg} "
          f"{s['clustering_refit']}/{s['clustering_changed']} |")
    w("")


def write_markdown(results: dict[str, Any], path: Path, plots: list[str]) -> None:
    env = results["environment"]
    L: list[str] = []
    w = L.append
    w(f"# clusterforget benchmark results ({'quick' if results['quick'] else 'full'} run)")
    w("")
    w(f"Command: `{results['command']}` · date {env['date_utc']} · wall time {results['wall_s'] / 60:.1f} min")
    w("")
    for m in results.get("merged", []):  # `--only ... --merge`: these sections come from a later partial run
        w(f"Merged since: {', '.join(m['sections'])} from `{m['command']} --merge` · date {m['date_utc']} · commit "
          f"{m['git_commit']} · load average {m['load_average'][0]} at start, {m['load_average'][1]} at end")
        w("")
    w(f"Machine: {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB, {env['os']} · Python {env['python']}")
    w("")
    w("Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f" · commit {env['git_commit']}")
    w("")
    w(f"Seeds: everything derives from seed {env['seed']} (splits, generated data, picked rows, learners' `seed`). "
      f"Load average at start {env['load_average_at_start']}, at end {results.get('load_average_at_end')} "
      "(other work on this machine makes absolute timings noisy; every ratio is measured side by side in this run).")
    w("")
    w("Method: every timing is the median of "
      f"{results['config']['repeats']} repeats (every sample in `latest.json`). Every ratio is measured side by "
      "side: each repeat runs the monolith and the operation back to back on the same data with the same learner "
      "parameters, and the ratio reported is the median over repeats of the per-pair ratio (the ratio of the two "
      "medians is in `latest.json` too; pairs survive bursts of load from other jobs). The timing monolith is plain "
      "`lightgbm.train` with exactly the parameters a member gets (100 rounds, deterministic=True, "
      "force_row_wise=True, seed, bin_construct_sample_cnt=max(200000, rows)) on a pre-encoded matrix; the "
      "accuracy monolith is `HashGroups(1)` (one member on all rows), checked equal to plain LightGBM "
      "(max |diff| in `latest.json`).")
    w("")
    w("## Headline: targets of issue 4")
    w("")
    w("| figure | baseline | target | measured | verdict |")
    w("|---|---|---|---|---|")
    for r in headline(results):
        w(f"| {r['figure']} | {r['baseline']} | {r['target']} | {r['measured']} | {_verdict(r['ok'])} |")
    w("")

    so = results.get("scoring")
    if so:
        w(f"## Scoring against one LightGBM model (adult by native-country, {so['members']} members, "
          f"{so['rounds']} rounds; one model: `Booster.predict` on the encoded matrix, 1 thread)")
        w("")
        w("| figure | measured | target | verdict |")
        w("|---|---|---|---|")
        for r in so["table"]:
            target = "—" if r["target"] is None else f"{r['target']:.2f}{r['unit']}"
            w(f"| {r['figure']} | {r['measured']:.2f}{r['unit']} | {target} | "
              f"{'—' if r['ok'] is None else _verdict(r['ok'])} |")
        w("")
    sc = results.get("scale")
    if sc:
        w(f"## Scale: {sc['data']}")
        w("")
        w(f"Monolith retrain ({sc['n_rows']:,} rows, median): {sc['monolith_retrain']['median']:.2f} s "
          f"(min {sc['monolith_retrain']['min']:.2f}, max {sc['monolith_retrain']['max']:.2f}).")
        w("")
        w("| grouping | forget 1 row, now | speedup | forget 1 row, deferred | speedup | retrain_pending after deferred | AUC loss (average / route) |")
        w("|---|---|---|---|---|---|---|")
        for spec, f in sc["forget_1"].items():
            acc = sc["accuracy"]
            losses = " / ".join(f"{acc[k]['delta_auc']:+.4f}" for k in (f"{spec} average", f"{spec} route") if k in acc)
            w(f"| {spec} | {_ms(f['now']['median'])} | {_x(f['speedup_now'])} | {_ms(f['deferred']['median'])} | "
              f"{_x(f['speedup_deferred'])} | {_ms(f['retrain_pending']['median'])} | {losses} |")
        w("")
        if sc.get("tradeoff"):
            w(f"Trade-off at {sc['n_rows']:,} rows (AUC loss vs the monolith, speedup of a 1-row forget with retrain now; "
              f"monolith AUC {sc['accuracy']['monolith']['auc']:.4f}):")
            w("")
            settings_table(w, sc["tradeoff"])
        fb = sc["forget_batch"]
        w(f"Batch of {fb['k']:,} random rows (monolith: {fb['monolith_estimate']['estimated_as']}, "
          f"{fb['monolith_estimate']['median']:,.0f} s):")
        w("")
        w("| grouping | groups retrained | batched, now | speedup | batched, deferred | speedup |")
        w("|---|---|---|---|---|---|")
        for spec, f in fb["by_grouping"].items():
            d = f["details"][0]
            w(f"| {spec} | {d['groups_retrained']}/{d['groups']} | {_ms(f['now']['median'])} | {_x(f['speedup_now'])} | "
              f"{_ms(f['deferred']['median'])} | {_x(f['speedup_deferred'])} |")
        w("")
        fm = sc.get("fit_memory")
        if fm:
            w(f"Fit wall time and peak memory, {fm['n_rows']:,} rows, one subprocess per side and repeat, "
              f"alternating (peak RSS read as {fm.get('peak_source')} after resetting the mark once the data was "
              "loaded and the libraries imported; 'before' = RSS at that point):")
            w("")
            w("| side | fit | peak RSS | RSS before fit | fit increment |")
            w("|---|---|---|---|---|")
            for side, label in (("mono", "monolith"), ("grouped", fm["grouping"])):
                s = fm[side]
                w(f"| {label} | {s['fit_s']['median']:.2f} s | {s['rss_peak_mb']['median']:,.0f} MiB | "
                  f"{s['rss_before_mb']['median']:,.0f} MiB | {s['fit_increment_mb']['median']:,.0f} MiB |")
            w("")
        w(f"Predict throughput ({sc['n_test']:,} rows, all cores):")
        w("")
        w("| model | median | rows/s | vs monolith |")
        w("|---|---|---|---|")
        for name, p in sc["predict"].items():
            w(f"| {name} | {_ms(p['median'])} | {p['rows_per_s']:,.0f} | {p['vs_monolith']:.2f}x |")
        w("")
        w("forget_group by size (hash:16 with retrain now: nothing retrains; kmeans:16 deferred: the clustering is refit "
          "because the group's rows hold part of the clustering sample):")
        w("")
        w("| rows | hash:16 forget_group | monolith retrain | speedup | kmeans:16 forget_group (deferred) | clustering changed |")
        w("|---|---|---|---|---|---|")
        for r in sc["forget_group"]:
            w(f"| {r['rows']:,} | {_ms(r['hash16_now']['median'])} | {_ms(r['monolith_retrain']['median'])} | "
              f"{_x(r['speedup'])} | {_ms(r['kmeans16_deferred']['median'])} | "
              f"{r['kmeans16_clustering_changed']}/{r['kmeans16_deferred']['n']} |")
        w("")
        w("Share of groups touched by a batch of k random deletions (mean of "
          f"{results['config']['repeats']} batches) vs 1 - (1 - 1/K)^k (and the size-aware "
          "mean of 1 - (1 - p_i)^k for unequal groups):")
        w("")
        for spec, t in sc.get("touched_share", {}).items():
            w(f"- {spec} (K = {t['K']}): " + "; ".join(
                f"k={r['k']}: {r['measured']:.3f} vs {r['formula']:.3f}"
                + (f" (sized {r['formula_sized']:.3f})" if abs(r['formula_sized'] - r['formula']) > 0.005 else "")
                + (f", clustering changed {r['clustering_changed']}x" if r["clustering_changed"] else "")
                for r in t["rows"]))
        w("")
        w("kmeans cascade (KMeansGroups(16), sample_size 10,000): single-row forgets from one fitted state:")
        w("")
        w("| rows | sample share | random rows: refit / changed | rows in the sample: refit / changed | expected changed rate | time (deferred), median |")
        w("|---|---|---|---|---|---|")
        for c in sc.get("cascade", []):
            rr, ri = c["random"], c["in_sample"]
            w(f"| {c['rows']:,} | {c['sample_share']:.1%} | {rr['refit_rate']:.1%} / {rr['changed_rate']:.1%} "
              f"(of {rr['trials']}) | {ri['refit_rate']:.1%} / {ri['changed_rate']:.1%} (of {ri['trials']}) | "
              f"{c['changed_rate_expected']:.2%} | {_ms(ri['seconds']['median'])} in-sample, "
              f"{_ms(rr['seconds']['median'])} random |")
        w("")

    if sc and sc.get("errors"):
        w("Subsections that failed in this run (traceback in `latest.json`): " + ", ".join(sc["errors"]))
        w("")

    if results.get("real"):
        w("## Real data: accuracy per grouping and K, and the deletion speedup of each")
        w("")
        w("Loss is vs the monolith (positive = worse): AUC drop (binary), log-loss increase (multiclass), relative "
          "RMSE increase (regression). Speedup = monolith retrain / `forget_rows` of 1 random row with retrain now "
          "(medians). kmeans rows include clustering refits when the forgotten row was in the clustering sample.")
        w("")
        for ds in results["real"]:
            task = ds["task"]
            m = ds["monolith"]
            w(f"### {ds['name']} ({task}, {ds['learner']}; {ds['source']}; {ds['rows_train']:,} / {ds['rows_test']:,} rows)")
            w("")
            w(f"Monolith: " + ", ".join(f"{k} {v:.4f}" if k != "rmse" else f"rmse {v:,.2f}" for k, v in m.items())
              + f"; retrain {ds['monolith_retrain']['median']:.2f} s ({ds['monolith_retrain_baseline']}).")
            w("")
            settings_table(w, ds)

    d = results.get("deferred")
    if d:
        w(f"## Time to no influence: a single-row deferred forget at {d['rows']:,} rows ({d['grouping']})")
        w("")
        w(f"{d['repeats']} pairs, alternating on one fitted model; copying = the group's rows filtered into new "
          "buffers (the removal before zero-copy slices). Reference: DaRE-RF's median single-row deletion on adult.")
        w("")
        w("| removal | median | min | max |")
        w("|---|---|---|---|")
        for name, key in (("zero-copy slices", "zero_copy_ms"), ("copying the group's rows", "copy_ms")):
            v = d[key]
            w(f"| {name} | {v['median']:.2f} ms | {v['min']:.2f} ms | {v['max']:.2f} ms |")
        w(f"| DaRE-RF (reference) | {d['dare_ms']} ms | | |")
        w("")
        w(f"Zero-copy is x{d['speedup_median_of_pairs']:.1f} faster than copying (median of pairs) and "
          f"x{d['vs_dare']:.1f} faster than DaRE-RF; must < 3.5 ms: {'met' if d['zero_copy_ms']['median'] < 3.5 else 'missed'}, "
          f"goal < 1 ms: {'met' if d['zero_copy_ms']['median'] < 1 else 'missed'}.")
        w("")

    if results.get("plan"):
        w("## cf.plan on the bundled data (default accuracy budget)")
        w("")
        w("| data set | rows | budget | recommended | K | loss | forget-1 s | one model | speedup | bound | measured / skipped | plan s |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results["plan"]:
            w(f"| {r['dataset']} | {r['rows']:,} | {r['budget']:g} {r['metric']} | {r['best']} | {r['k']} | "
              f"{r['loss']:+.4f} | {r['forget_s']:.3f} s | {r['one_model_forget_s']:.3f} s | {_x(r['speedup'])} | "
              f"{r['bound']} | {r['candidates']} / {r['skipped']} | {r['plan_s']:.0f} |")
        w("")

    if results.get("auto"):
        w('## grouping="auto": accuracy loss vs rows per hash shard')
        w("")
        w("Loss vs one model (K=1) on the holdout, as above. `auto K` is what `AutoGroups()` picks for the training "
          "rows; its thresholds (`clusterforget/grouping/auto.py`) are read off this table.")
        w("")
        w("| data set | task | K | rows / shard | rarest-class rows / shard | loss | auto K |")
        w("|---|---|---|---|---|---|---|")
        for r in results["auto"]:
            mino = "" if r["minority_per_shard"] is None else f"{r['minority_per_shard']:,}"
            w(f"| {r['dataset']} | {r['task']} | {r['k']} | {r['rows_per_shard']:,} | {mino} | "
              f"{r['loss']:+.4f} {r['metric']} | {r['auto_k']} |")
        w("")

    if results.get("combine"):
        from bench.stopping import combine_table

        w('## combine="auto" on adult\'s keys (issue 21)')
        w("")
        w("Holdout AUC loss vs one model (`HashGroups(1)`), adult 80/20 split, default settings; `auto` chooses on "
          "the members' held-out slices (`bench/stopping.py`).")
        w("")
        w(combine_table(results["combine"]))
        w("")
    if results.get("stopping"):
        from bench.stopping import stopping_table

        w("## Early stopping per member (issue 21)")
        w("")
        w("Default grouping; `early_stopping=False` vs `True` on the same rows; forget time is the median of "
          "single-row forgets (one member retrains).")
        w("")
        w(stopping_table(results["stopping"]))
        w("")

    if plots:
        w("## Plots")
        w("")
        for p in plots:
            w(f"![{p}]({p})")
            w("")

    prof = results.get("profile")
    if prof:
        w(f"## Profile (cProfile, {prof['n_rows']:,} rows)")
        w("")
        for name, p in prof.items():
            if name == "n_rows":
                continue
            w(f"<details><summary>{name}: {p['total_s'] * 1000:.1f} ms profiled</summary>")
            w("")
            w("| function (by cumulative time) | calls | cumtime | tottime |")
            w("|---|---|---|---|")
            for r in p["by_cumtime"]:
                w(f"| `{r['function']}` | {r['calls']} | {r['cumtime_s'] * 1000:.1f} ms | {r['tottime_s'] * 1000:.1f} ms |")
            w("")
            w("| function (by own time) | calls | tottime |")
            w("|---|---|---|")
            for r in p["by_tottime"][:8]:
                w(f"| `{r['function']}` | {r['calls']} | {r['tottime_s'] * 1000:.1f} ms |")
            w("")
            w("</details>")
            w("")

    if results.get("suspects"):
        from bench.suspects import markdown as suspects_markdown

        L.extend(suspects_markdown(results["suspects"]))
    if results.get("dask"):
        from bench.cluster import markdown as dask_markdown

        L.extend(dask_markdown(results["dask"]))
    findings = HERE / "findings.md"
    if findings.exists():
        w(findings.read_text().rstrip())
        w("")
    path.write_text("\n".join(L) + "\n")


# ---------------------------------------------------------------------------------------------- plots
def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    real = [d for d in results.get("real", []) if d["learner"] == "lightgbm"]
    if results.get("scale", {}).get("tradeoff"):
        real = [results["scale"]["tradeoff"]] + real
    if real:
        cols = min(3, len(real))
        rows = math.ceil(len(real) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
        styles = {("hash", "average"): ("tab:blue", "o-"), ("kmeans", "average"): ("tab:orange", "s-"),
                  ("kmeans", "route"): ("tab:red", "s--"), ("key", "average"): ("tab:green", "^"),
                  ("key", "route"): ("tab:olive", "v")}
        for ax, ds in zip(axes.flat, real):
            task = ds["task"]
            scale = 100.0 if task == "regression" else 1.0
            for (kind, comb), (color, st) in styles.items():
                pts = [s for s in ds["settings"] if s["grouping"] == kind and s["combine"] == comb]
                if not pts:
                    continue
                if kind != "key":
                    pts.sort(key=lambda s: s["param"])
                xs = [s["loss"] * scale for s in pts]
                ys = [s["speedup_now"] for s in pts]
                ax.plot(xs, ys, st, color=color, label=f"{kind} {comb}", ms=6, lw=1.2)
                for s, x, yv in zip(pts, xs, ys):
                    lab = f"K={s['param']}" if kind != "key" else f"{s['param']} ({s['groups']})"
                    ax.annotate(lab, (x, yv), fontsize=6.5, xytext=(3, 2), textcoords="offset points")
            ax.set_yscale("log")
            ax.axvline(0, color="grey", lw=0.6)
            ax.set_xlabel({"binary": "AUC loss vs monolith", "multiclass": "log-loss increase vs monolith",
                           "regression": "RMSE increase vs monolith (%)"}[task])
            ax.set_ylabel("deletion speedup (1 row, retrain now)")
            ax.set_title(f"{ds['name']} ({task})", fontsize=10)
            ax.grid(alpha=0.3, which="both")
        for ax in list(axes.flat)[len(real):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle("Deletion speedup vs accuracy loss (LightGBM, 100 rounds; left and up is better)", fontsize=11)
        fig.tight_layout()
        fig.savefig(out / "tradeoff.png", dpi=110)
        plt.close(fig)
        names.append("tradeoff.png")

    sc = results.get("scale")
    if sc:
        fg = sc["forget_group"]
        if fg:
            fig, ax = plt.subplots(figsize=(6, 4))
            xs = [r["rows"] for r in fg]
            ax.plot(xs, [1000 * r["hash16_now"]["median"] for r in fg], "o-", label="hash:16 forget_group (now)")
            ax.plot(xs, [1000 * r["kmeans16_deferred"]["median"] for r in fg], "s--",
                    label="kmeans:16 forget_group (deferred, clustering refit)")
            ax.plot(xs, [1000 * r["monolith_retrain"]["median"] for r in fg], "k:", label="monolith retrain")
            ax.axhline(10, color="red", lw=0.8, label="target 10 ms")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("training rows")
            ax.set_ylabel("ms (median)")
            ax.set_title("forget_group time vs size")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3, which="both")
            fig.tight_layout()
            fig.savefig(out / "forget_group.png", dpi=110)
            plt.close(fig)
            names.append("forget_group.png")
        ts = sc.get("touched_share", {})
        if ts:
            fig, ax = plt.subplots(figsize=(6, 4))
            for spec, t in ts.items():
                ks = [r["k"] for r in t["rows"]]
                line, = ax.plot(ks, [r["measured"] for r in t["rows"]], "o", label=f"{spec} measured")
                ax.plot(ks, [r["formula"] for r in t["rows"]], "-", color=line.get_color(), lw=1,
                        label=f"1-(1-1/{t['K']})^k")
            ax.set_xscale("log")
            ax.set_xlabel("k random deletions in one batch")
            ax.set_ylabel("share of groups retrained")
            ax.set_title("Groups touched by a batch of deletions")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(out / "touched_share.png", dpi=110)
            plt.close(fig)
            names.append("touched_share.png")
        hl = [r for r in headline(results) if "x" in r["target"] and "predict" not in r["figure"]
              and "fit" not in r["figure"] and "memory" not in r["figure"]]
        if hl:
            fig, ax = plt.subplots(figsize=(7, 0.45 * len(hl) + 1.2))
            labels = [r["figure"].replace("forget_rows ", "") for r in hl]
            vals = [r["value"] for r in hl]
            targets = [float(r["target"].split()[1].rstrip("x")) for r in hl]
            ax.barh(range(len(hl)), vals, color=["tab:green" if r["ok"] else "tab:red" for r in hl])
            ax.scatter(targets, range(len(hl)), marker="|", s=300, color="black", label="target")
            ax.set_yticks(range(len(hl)))
            ax.set_yticklabels(labels, fontsize=7)
            ax.set_xscale("log")
            ax.set_xlabel(f"speedup vs monolith retrain ({sc['n_rows']:,} rows)")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3, axis="x", which="both")
            fig.tight_layout()
            fig.savefig(out / "speedups.png", dpi=110)
            plt.close(fig)
            names.append("speedups.png")
    return names
