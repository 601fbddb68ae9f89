"""Views of a `harness.compare.Comparison`: console text, a markdown PR comment, a seaborn plot.

Every view is built from the same tables (environment, findings, verdict counts, rows present
in one run only); nothing is computed here that the Comparison does not already hold.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.compare import KINDS, Comparison
from harness.vocabulary import COLUMN_DEFAULTS, KEY_COLUMNS

# Short headers: the key (vocabulary.KEY_COLUMNS, 20 columns) is wide before anything is said
# about the row.
_HEADERS = {"batch_size": "B", "num_classes": "C", "logit_scale": "scale"}
_KEY_SHOWN = list(KEY_COLUMNS)


def _fmt_value(kind: str, v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if kind == "time":
        s = float(v)
        return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"
    if kind == "memory":
        return f"{int(v):,} B"
    return str(v)


def findings_table(c: Comparison, role: str, largest_first: bool = False) -> pd.DataFrame:
    """The findings with this role, formatted for display (short headers, units); with
    largest_first, accuracy first, then by the size of the change."""
    f = c.findings[c.findings["role"] == role]
    if largest_first and len(f):
        order = {"accuracy": 0, "memory": 1, "time": 2}
        f = f.assign(_k=f["kind"].map(order), _s=-f["size"].astype(float)).sort_values(["_k", "_s"])
    out = f[_KEY_SHOWN + ["kind", "change"]].copy()
    out["base"] = [_fmt_value(k, v) for k, v in zip(f["kind"], f["base"])]
    out["new"] = [_fmt_value(k, v) for k, v in zip(f["kind"], f["new"])]
    out["logit_scale"] = out["logit_scale"].map(lambda x: f"{x:g}")
    return out.rename(columns=_HEADERS).reset_index(drop=True)


def verdict_counts(c: Comparison) -> pd.DataFrame:
    """One row per kind: how many joined rows got each verdict ("same" = within the noise)."""
    rows = []
    for kind in KINDS:
        counts = c.rows[kind].value_counts() if len(c.rows) else pd.Series(dtype=int)
        gated = (
            "information"
            if kind not in c.gates
            else ("information: " + c.demoted[kind])
            if kind in c.demoted
            else "gated"
        )
        rows.append(
            {"kind": kind, "verdicts": ", ".join(f"{n} {v}" for v, n in counts.items()) or "-", "gate": gated}
        )
    return pd.DataFrame(rows)


def one_run_only(c: Comparison) -> pd.DataFrame:
    """Rows present in one run only, counted per (variant, side): a variant added or removed."""
    parts = [df.assign(only_in=side) for side, df in (("base", c.only_base), ("new", c.only_new)) if len(df)]
    if not parts:
        return pd.DataFrame(columns=["variant", "only_in", "rows"])
    both = pd.concat(parts)
    return both.groupby(["variant", "only_in"], sort=False).size().reset_index(name="rows")


def ambiguous_reasons(c: Comparison) -> pd.DataFrame:
    """The ambiguous time rows counted by the kind of reason (the word before the colon of
    time_note: few samples, spread, calibration, contention, relative), with one example."""
    amb = c.ambiguous
    if amb.empty:
        return pd.DataFrame(columns=["reason", "rows", "example"])
    kind = amb["time_note"].str.split(":").str[0]
    out = amb.assign(reason=kind).groupby("reason", sort=False)
    table = out.size().reset_index(name="rows")
    table["example"] = [
        f"{g['variant'].iloc[0]} {g['mode'].iloc[0]}: {g['time_note'].iloc[0]}" for _, g in out
    ]
    return table.sort_values("rows", ascending=False).reset_index(drop=True)


def _ambiguous_phrase(c: Comparison) -> str:
    reasons = ambiguous_reasons(c)
    if reasons.empty:
        return ""
    why = ", ".join(f"{n} {r}" for r, n in zip(reasons["reason"], reasons["rows"]))
    return f"; {len(c.ambiguous)} time rows ambiguous ({why})"


def summary_line(c: Comparison) -> str:
    reg = c.regressions
    if len(reg) == 0:
        strict = " [strict: ambiguity fails]" if c.exit_code else ""
        return (
            f"no regression ({len(c.rows)} rows compared, gates: {', '.join(c.gates) or 'none'}"
            f"{_ambiguous_phrase(c)}){strict}"
        )
    by_kind = ", ".join(f"{k} {n}" for k, n in reg["kind"].value_counts().items())
    return (
        f"REGRESSION: {len(reg)} finding(s) ({by_kind}) in {len(c.rows)} rows compared{_ambiguous_phrase(c)}"
    )


def _settings_line(c: Comparison) -> str:
    t = c.thresholds
    return (
        f"time factor {t.time_factor:g} on {t.time_basis} time (sample intervals, calibration, CPU "
        f"time); memory factor {t.memory_factor:g}; error factor {t.error_factor:g}; gates: "
        f"{', '.join(c.gates) or 'none'}" + ("; strict" if t.strict else "")
    )


def _table(df: pd.DataFrame, fmt: str) -> str:
    return df.to_markdown(index=False, tablefmt=fmt)


def _sections(c: Comparison, fmt: str, limit: int | None) -> list[tuple[str, str, bool]]:
    """(title, table text, collapsed?) for each non-empty section, in reading order."""
    out = []
    for role, title, collapsed in (
        ("regression", "Regressions", False),
        ("improvement", "Improvements", True),
        ("information", "Information (changes that do not fail)", True),
    ):
        t = findings_table(c, role)
        if len(t) == 0:
            continue
        more = ""
        if limit is not None and len(t) > limit and role != "regression":
            more = f"\n... {len(t) - limit} more (all of them: --markdown FILE)"
            t = t.head(limit)
        # Key columns every row shares (the loss options of a plain run, its device) said once.
        t, hoisted = _hoisted(t)
        text = (hoisted + "\n" if hoisted else "") + _table(t, fmt) + more
        out.append((f"{title}: {len(findings_table(c, role))}", text, collapsed))
    reasons = ambiguous_reasons(c)
    if len(reasons):
        out.append(
            (f"Ambiguous time rows: {len(c.ambiguous)} (not judged; the reasons)", _table(reasons, fmt), True)
        )
    only = one_run_only(c)
    if len(only):
        out.append(
            (
                f"Rows in only one run: {len(c.only_base) + len(c.only_new)} (information, not a regression)",
                _table(only, fmt),
                True,
            )
        )
    return out


def console(c: Comparison, limit: int = 30) -> str:
    """Plain-text report: environment first, then verdict counts, findings, and the result."""
    lines = [
        f"compare: base {c.base_dir}  ->  new {c.new_dir}",
        _settings_line(c),
        "",
        _table(c.env, "simple"),
    ]
    for kind, reason in c.demoted.items():
        lines.append(f"note: {kind} verdicts are information: {reason}")
    lines += ["", _table(verdict_counts(c), "simple")]
    for title, text, _ in _sections(c, "simple", limit):
        lines += ["", title, text]
    lines += ["", summary_line(c)]
    return "\n".join(lines)


MARKDOWN_LINES = 40  # a PR comment that fits a screen; the whole report is the console's


def _hoisted(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The table without its key columns that hold one value, and those as one line."""
    if len(table) < 2:
        return table, ""
    keys = [c for c in table.columns if c in {_HEADERS.get(k, k) for k in _KEY_SHOWN}]
    constant = [c for c in keys if table[c].nunique(dropna=False) == 1]
    # Loss options (and hidden_size, bias) at their defaults are "the plain loss": one phrase, not ten.
    plain = [c for c in constant if c in COLUMN_DEFAULTS and table[c].iloc[0] == COLUMN_DEFAULTS[c]]
    parts = [f"{c} {table[c].iloc[0]}" for c in constant if c not in plain]
    if plain and len(plain) == len([c for c in keys if c in COLUMN_DEFAULTS]):
        parts.append("the plain loss (no option on)")
    else:
        parts += [f"{c} {table[c].iloc[0]}" for c in plain]
    line = ", ".join(parts)
    return table.drop(columns=constant), (f"All rows below: {line}." if line else "")


def _details(title: str, table: pd.DataFrame, budget: int) -> list[str]:
    """A folded section of at most `budget` lines (its table cut to fit, the cut said), or []."""
    fixed = 6  # <details>, blank, table header (2), blank, </details>
    room = budget - fixed - 1
    if room < 1 or table.empty:
        return []
    shown = table.head(room)
    more = len(table) - len(shown)
    text = _table(shown, "github") + (f"\n\n{more} more: see the console report" if more else "")
    return [f"<details><summary>{title}</summary>", "", text, "", "</details>"]


def markdown(c: Comparison, max_lines: int = MARKDOWN_LINES) -> str:
    """A pull-request comment of at most `max_lines` lines (0: no limit): the result, then the
    regressions, largest first, with the columns they share hoisted into one line; everything
    else folded in <details>, cut to fit."""
    budget = max_lines if max_lines > 0 else 10**9
    lines = [
        f"### Comparison: {summary_line(c)}",
        "",
        f"`{c.base_dir}` -> `{c.new_dir}`; {_settings_line(c)}",
    ]
    for kind, reason in c.demoted.items():
        lines.append(f"> {kind} verdicts are information: {reason}")
    reg = findings_table(c, "regression", largest_first=True)
    if len(reg):
        reg, hoisted = _hoisted(reg)
        room = max(3, budget - len(lines) - 6 - 12)  # leave room for the folded sections
        shown = reg.head(room)
        lines += (
            ["", f"#### Regressions: {len(reg)}"]
            + ([hoisted] if hoisted else [])
            + ["", _table(shown, "github")]
        )
        if len(shown) < len(reg):
            lines.append(f"{len(reg) - len(shown)} more: see the console report")
    sections = [
        ("Verdicts per kind", verdict_counts(c)),
        (f"Ambiguous time rows: {len(c.ambiguous)}", ambiguous_reasons(c)),
        ("Environment", c.env),
        (f"Improvements: {len(findings_table(c, 'improvement'))}", findings_table(c, "improvement")),
        (f"Information: {len(findings_table(c, 'information'))}", findings_table(c, "information")),
        (f"Rows in only one run: {len(c.only_base) + len(c.only_new)}", one_run_only(c)),
    ]
    lines.append("")
    for title, table in sections:
        block = _details(title, table, budget - len("\n".join(lines).splitlines()))
        lines += block
    return "\n".join(lines).rstrip() + "\n"


# One colour per verdict in both panels: regressions red, improvements green, noise grey.
_PALETTE = {
    "slower": "tab:red",
    "bigger": "tab:red",
    "faster": "tab:green",
    "smaller": "tab:green",
    "same": "tab:gray",
    "ambiguous": "khaki",
}


def plot(c: Comparison, path: str | Path) -> Path:
    """Time and memory ratios (new / base, log axis) per variant, coloured by verdict, with the
    factors drawn as dashed lines; saved to `path` (format from the suffix)."""
    import seaborn as sns
    from matplotlib.figure import Figure  # outside pyplot: no backend chosen, Agg when saved

    order = list(dict.fromkeys(c.rows["variant"]))  # the runs' (registry) order: stable colours
    fig = Figure(figsize=(12, 0.35 * len(order) + 2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind, factor in (
        (axes[0], "time", c.thresholds.time_factor),
        (axes[1], "memory", c.thresholds.memory_factor),
    ):
        data = c.rows[[f"{kind}_ratio", kind, "variant"]].replace([math.inf, -math.inf], math.nan).dropna()
        if len(data):
            hue_order = [v for v in _PALETTE if v in set(data[kind])]
            sns.stripplot(
                data=data,
                x=f"{kind}_ratio",
                y="variant",
                hue=kind,
                order=order,
                ax=ax,
                hue_order=hue_order,
                palette=_PALETTE,
                jitter=0.2,
                alpha=0.7,
            )
        ax.set_xscale("log")
        for x in (factor, 1 / factor):
            ax.axvline(x, linestyle="--", color="grey", linewidth=0.8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel(f"{kind} ratio (new / base)")
        ax.set_title(kind + (" (information)" if kind in c.demoted or kind not in c.gates else ""))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
