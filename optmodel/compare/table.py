"""The comparison table: one row per run (any task), the base model(s) as reference rows,
size measures, each accuracy metric with its change from the base, and Pareto marks.

A run is Pareto-optimal for a metric when no other completed run (or the base) is at most
its size and at least as accurate, and strictly better in one of the two. Runs that did not
complete (failed, gated) are listed but are no candidates: there is nothing to ship.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from optmodel.facts import measures
from optmodel.facts.errors import ConfigError
from optmodel.facts.rundir import MANIFEST_NAME, effective_status
from optmodel.launch.sweep import read_record

SIZE_COLUMNS = ("model_bytes", "effective_bits", "parameters", "active_parameters")
SHIPPABLE = "completed"


@dataclass
class Row:
    name: str  # the run dir relative to the dir the compared runs share, or "base (<model>)"
    kind: str  # what made the model, e.g. "quantize NVFP4_DEFAULT_CFG", "prune num_layers=2 -> distill"
    task: str
    status: str
    sizes: Dict[str, Optional[float]]
    values: Dict[str, float]  # accuracy metric -> value of the produced model
    base_key: str = ""  # which reference row holds its base
    run_dir: str = ""
    gate: str = ""  # the gate's verdict, when the run had one
    is_base: bool = False
    pareto: set = field(default_factory=set)  # metrics it is Pareto-optimal for


def _read(run_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads((run_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_dirs(paths: Sequence[str]) -> List[Path]:
    """Run dirs named directly, and every job dir of a sweep dir (its sweep.json, else every
    subdir with a manifest). A path that is neither is a ConfigError (exit 2)."""
    found: List[Path] = []
    problems = []
    for given in paths:
        path = Path(given).expanduser()
        if (path / MANIFEST_NAME).is_file():
            found.append(path)
            continue
        jobs = read_record(path) if path.is_dir() else None
        dirs = [Path(j["run_dir"]) for j in jobs] if jobs else sorted(p.parent for p in path.glob(f"*/{MANIFEST_NAME}"))
        dirs = [d for d in dirs if (d / MANIFEST_NAME).is_file()]
        if not dirs:
            problems.append(f"{given}: not an optmodel run dir (no {MANIFEST_NAME}) nor a sweep dir (no sweep.json, no "
                            f"job dir with {MANIFEST_NAME}). Fix: name run dirs or `-m` sweep dirs.")
        found += dirs
    for d in found:
        if _read(d) is None:
            problems.append(f"{d / MANIFEST_NAME}: not readable as a run manifest (corrupt JSON).")
    if problems:
        raise ConfigError(problems)
    return list(dict.fromkeys(p.resolve() for p in found))


def labels(dirs: Sequence[Path]) -> Dict[Path, str]:
    """Each run dir relative to the dir all of them share (a sweep's jobs: <sweep>/<job>)."""
    if not dirs:
        return {}
    common = Path(os.path.commonpath([str(d.parent) for d in dirs]))
    if all(d.parent == common for d in dirs):  # one sweep's jobs: "<sweep>/<job>", not a bare number
        common = common.parent
    return {d: str(d.relative_to(common)) for d in dirs}


def describe(manifest: Dict[str, Any]) -> str:
    """What the run did to its model, in a few words, read from what its manifest records
    (steps, pruning target, draft settings, format, training steps)."""
    task = manifest.get("task") or "?"
    quant = manifest.get("quantization") or {}
    fmt = quant.get("format")
    steps = manifest.get("steps")
    if isinstance(steps, dict) and steps:  # several tasks on one model load
        return f"{task} " + " -> ".join(steps) + (f" ({fmt})" if fmt else "")
    words = [task]
    if "pruning" in manifest:
        target = (manifest.get("pruning") or {}).get("export_config") or {}
        words.append(" ".join(f"{k}={v}" for k, v in target.items()) or "?")
    draft = manifest.get("speculative") or {}
    if draft:
        words.append(f"layers={draft.get('draft_layers')} ttt={draft.get('ttt_steps')} vocab={draft.get('draft_vocab_size')}")
    trained = (manifest.get("metrics") or {}).get("train_steps")
    if fmt:
        kv = quant.get("kv_cache")
        words.append(fmt + (f" kv {kv}" if trained is None and kv not in (None, "none") else ""))
    if trained is not None:
        words.append(f"{trained} steps")
    return ", ".join([" ".join(words)] + (training_words(manifest) if trained is not None else []))


def training_words(manifest: Dict[str, Any]) -> List[str]:
    """Tokens seen, the teacher and KL to it before -> after, where the run recorded them."""
    metrics = manifest.get("metrics") or {}
    said = [f"{metrics['train_tokens']} tokens"] if measures.is_number(metrics.get("train_tokens")) else []
    _, teacher = measures.trained_models(manifest)
    if teacher:
        said.append(f"teacher {measures.short_path(teacher)}")
    kl = [metrics.get("kl_teacher_before"), metrics.get("kl_teacher_after")]
    if all(measures.is_number(v) for v in kl):
        said.append(f"KL to teacher {kl[0]:.4g} -> {kl[1]:.4g}")
    return said


def lineage(run_dir: Path, manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The manifests from the first run (the base model's) to this one, following run.load."""
    chain, seen = [manifest], {run_dir.resolve()}
    while chain[0].get("loaded_from"):
        origin_dir = Path(chain[0]["loaded_from"]).expanduser().resolve()
        origin = _read(origin_dir) if origin_dir not in seen else None
        if origin is None:
            break
        seen.add(origin_dir)
        chain.insert(0, origin)
    return chain


def gate_text(manifest: Dict[str, Any]) -> str:
    gate = manifest.get("gate") or {}
    return gate.get("verdict", "") if isinstance(gate, dict) else ""


def collect(paths: Sequence[str]) -> List[Row]:
    """Reference rows (one per base model) and one row per run."""
    rows: List[Row] = []
    bases: Dict[str, Dict[str, Any]] = {}  # base key -> sizes and every run's base values
    found = run_dirs(paths)
    names = labels(found)
    for run_dir in found:
        manifest = _read(run_dir)
        chain = lineage(run_dir, manifest)
        root = chain[0]
        base_values, _ = measures.measured(measures.ordered_metrics(root))
        _, values = measures.measured(measures.ordered_metrics(manifest))
        key = f"{root.get('model') or '?'}|{root.get('input_checkpoint') or ''}"
        base = bases.setdefault(key, {"checkpoint": root.get("input_checkpoint"), "sizes": measures.base_sizes(root),
                                      "values": {}})
        for metric, v in base_values.items():
            base["values"].setdefault(metric, []).append(v)
        kind = " -> ".join(describe(m) for m in chain)
        rows.append(Row(name=names[run_dir], kind=kind, task=manifest.get("task") or "?",
                        status=effective_status(manifest) or "unknown", sizes=measures.sizes(manifest),
                        values=values if manifest.get("status") in (SHIPPABLE, "gated") else {},
                        base_key=key, run_dir=str(run_dir), gate=gate_text(manifest)))
    models = [k.split("|")[0] for k in bases]
    references = [Row(name=f"base ({k.split('|')[0]}{', ' + str(b['checkpoint']) if models.count(k.split('|')[0]) > 1 else ''})",
                      kind="base model", task="", status="reference", sizes=b["sizes"],
                      values={m: sum(v) / len(v) for m, v in b["values"].items()}, base_key=k,
                      run_dir=str(b["checkpoint"] or ""), is_base=True) for k, b in bases.items()]
    rows.sort(key=lambda r: (r.sizes["model_bytes"] is None, r.sizes["model_bytes"] or 0, r.name))
    return references + rows


def metric_columns(rows: List[Row]) -> List[str]:
    """Every accuracy metric a row holds: held-out perplexity first, then MMLU, then the rest."""
    present = {m for r in rows for m in r.values}
    first = [m for m in measures.ACCURACY_NAMES if m in present]
    return first + sorted(present - set(first))


def common_metric_problems(rows: List[Row]) -> List[str]:
    """Nothing to compare: no run measured accuracy, or the runs share no metric."""
    runs = [r for r in rows if not r.is_base and r.values]
    if not runs:
        return ["no run measured an accuracy metric (perplexity, mmlu, lm-eval tasks, al) after its optimization, "
                "or none completed. Fix: compare runs that evaluate (task.perplexity=true, task.evaluate.mmlu=true, "
                "task.evaluate.tasks=[...]) and completed."]
    if not set.intersection(*(set(r.values) for r in runs)):
        listed = "; ".join(f"{r.name}: {', '.join(sorted(r.values))}" for r in runs)
        return [f"the runs share no accuracy metric ({listed}). Fix: compare runs that measured the same metric."]
    return []


def better_or_equal(metric: str, a: float, b: float) -> bool:
    return a <= b if measures.lower_is_better(metric) else a >= b


def mark_pareto(rows: List[Row], metrics: List[str], size: str = "model_bytes") -> None:
    """rows[i].pareto gets each metric for which row i is on the size / accuracy front."""
    for metric in metrics:
        candidates = [r for r in rows if (r.is_base or r.status == SHIPPABLE) and metric in r.values
                      and measures.is_number(r.sizes.get(size))]
        for r in candidates:
            dominated = any(
                q is not r and q.sizes[size] <= r.sizes[size] and better_or_equal(metric, q.values[metric], r.values[metric])
                and (q.sizes[size] < r.sizes[size] or q.values[metric] != r.values[metric])
                for q in candidates)
            if not dominated:
                r.pareto.add(metric)


def changes(rows: List[Row], metrics: List[str]) -> Dict[int, Dict[str, Optional[float]]]:
    """Each run's change from its base per metric, in the gate's units (see measures.drop)."""
    base = {r.base_key: r for r in rows if r.is_base}
    out = {}
    for i, r in enumerate(rows):
        ref = base.get(r.base_key)
        out[i] = {m: (measures.drop(m, ref.values[m], r.values[m])
                      if not r.is_base and ref and m in ref.values and m in r.values and ref.values[m] else None)
                  for m in metrics}
    return out


def header(metrics: List[str], full: bool) -> List[str]:
    cols = ["run", "kind", "status", *SIZE_COLUMNS]
    for m in metrics:
        cols += [m, f"{m}_drop", f"pareto_{m}"]
    return cols + ["gate"] + ["run_dir"] * full


def cells(rows: List[Row], metrics: List[str], fmt, full: bool) -> List[List[str]]:
    """full: with the run dir (csv); the Markdown table names runs by their short label."""
    drops = changes(rows, metrics)
    out = []
    for i, r in enumerate(rows):
        line = [r.name, r.kind, r.status, *[fmt(r.sizes.get(c)) for c in SIZE_COLUMNS]]
        for m in metrics:
            line += [fmt(r.values.get(m)), fmt(drops[i][m]), "yes" if m in r.pareto else ""]
        out.append(line + [r.gate] + [r.run_dir] * full)
    return out


def _plain(value: Any) -> str:
    return "" if value is None else str(value)


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1e5 else f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def to_csv(rows: List[Row], metrics: List[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header(metrics, full=True))
    writer.writerows(cells(rows, metrics, _plain, full=True))
    return out.getvalue()


def to_markdown(rows: List[Row], metrics: List[str], size: str = "model_bytes") -> str:
    head = header(metrics, full=False)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in cells(rows, metrics, _short, full=False):
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in line) + " |")
    lines.append("")
    units = ", ".join(f"{m}_drop in {measures.drop_unit(m)}" for m in metrics)
    lines.append(f"Against the base model: {units}. Pareto: no completed run (or the base) is at most as large "
                 f"({size}) and at least as accurate.")
    for m in metrics:
        front = [r.name for r in rows if m in r.pareto]
        lines.append(f"- Pareto-optimal for {m}: {', '.join(front) or 'none'}")
    done = [r for r in rows if r.status == SHIPPABLE and measures.is_number(r.sizes.get(size))]
    if done:
        smallest = min(done, key=lambda r: r.sizes[size])
        lines.append(f"- smallest completed run ({size}): {smallest.name} ({smallest.kind})")
    for r in rows:
        if r.status not in (SHIPPABLE, "reference"):
            lines.append(f"- {r.status}: {r.name} ({r.kind})" + (f": {r.gate}" if r.gate else ""))
    return "\n".join(lines) + "\n"
