"""The loss-options section: per option, each implementation's error with the option off and
on, and what the option costs in time.

"Off" is the plain loss at the same dtype, logits, B, C and target kind (the `plain` point of
`+sweep=options`); "on" is every point whose options are exactly that option's setting. Errors
are medians over the point's rows (fwd and fwd_bwd for the loss, fwd_bwd for the gradient);
the cost is the median fwd_bwd time on over off, measured side by side in the same run.

Each family's rows get their own tables (`family`): the fused linear + cross-entropy rows
(`+sweep=linear_options`) are also matched on D, their bias counts as an option ("bias"), and
their gradient error is the largest of dH's, dW's and db's.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report import data

_SAME_POINT = ["dtype", "logits", "batch_size", "num_classes", "targets"]


def _sci(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1e}"


def _errors(g: pd.DataFrame) -> tuple[float, float]:
    judged = g[g["status"].isin(("ok", "inaccurate"))]
    return judged["loss_rel_err"].median(), judged.loc[judged["mode"] == "fwd_bwd", "grad_rel_err"].median()


def _time(g: pd.DataFrame) -> float:
    t = g.loc[(g["mode"] == "fwd_bwd") & g["status"].isin(("ok", "inaccurate")), "time_median_s"]
    return float(t.median()) if len(t) else math.nan


def _plain_equivalent(variant: str, family: str) -> str:
    if family == "linear_cross_entropy":
        from harness.linear_cross_entropy.variants import REGISTRY

        registered = dict(REGISTRY)
    else:
        _, registered = data._registry()
    v = registered.get(variant)
    return v.plain_equivalent if v is not None else ""


def option_tables(
    rows: pd.DataFrame, order: list[str], family: str = "cross_entropy"
) -> list[tuple[str, "pd.DataFrame | str", str]]:
    """(title, table or why not, caption) per option setting present besides "plain", for the
    rows of one family (cross_entropy or linear_cross_entropy: the `family` column)."""
    if rows.empty or not data.has(rows, "reduction"):
        return []
    linear = family == "linear_cross_entropy"
    rows = data.family_rows(rows, family)
    if rows.empty:
        return []
    same_point = _SAME_POINT + (["hidden_size"] if linear else [])
    rows = rows.assign(_option=data.option_label(rows), logits=rows["logits"].fillna("normal"))
    # one option at a time first, in the order of the settings; combinations after them
    labels = sorted((x for x in set(rows["_option"]) if x != "plain"), key=lambda x: (x.count(" "), x))
    if not labels:
        return []
    plain = rows[rows["_option"] == "plain"]
    rank = {v: i for i, v in enumerate(order)}
    out = []
    for label in labels:
        on = rows[rows["_option"] == label]
        unsupported = sorted(
            set(on.loc[on["status"] == "unsupported", "variant"]), key=lambda v: rank.get(v, 99)
        )
        table = []
        for key, g_on in on[on["status"] != "unsupported"].groupby(same_point + ["variant"], sort=False):
            point, variant = key[:-1], key[-1]
            g_off = plain[(plain[same_point] == pd.Series(point, index=same_point)).all(axis=1)]
            same = g_off[g_off["variant"] == variant]
            if same.empty:  # not run on the plain loss, where it is another variant call for call
                same = g_off[g_off["variant"] == _plain_equivalent(variant, family)]
            g_off = same
            loss_on, grad_on = _errors(g_on)
            loss_off, grad_off = _errors(g_off) if len(g_off) else (math.nan, math.nan)
            t_on, t_off = _time(g_on), _time(g_off) if len(g_off) else math.nan
            statuses = sorted(set(g_on["status"]))
            table.append(
                {
                    "dtype": point[0],
                    "logits": point[1],
                    "variant": variant,
                    "status with it": ", ".join(statuses),
                    "loss error off → on": f"{_sci(loss_off)} → {_sci(loss_on)}",
                    "gradient error off → on": f"{_sci(grad_off)} → {_sci(grad_on)}",
                    "fwd_bwd time on ÷ off": "-" if math.isnan(t_on / t_off) else f"{t_on / t_off:.2f}×",
                    "_rank": rank.get(variant, 99),
                    "_bad": statuses != ["ok"],
                }
            )
        caption = (
            "Errors against float64 on the same rounded inputs (medians); the time ratio is the median "
            "fwd_bwd time with the option over the plain loss's, same run, same point. "
            + (
                f"Unsupported (the option is not among what they honour): {', '.join(unsupported)}."
                if unsupported
                else ""
            )
        )
        if not table:
            out.append((label, "no variant honours this option at these points", caption))
            continue
        df = pd.DataFrame(table)
        dorder = {d: i for i, d in enumerate(data.dtype_order(df["dtype"].unique()))}
        df = df.assign(_d=df["dtype"].map(dorder)).sort_values(
            ["_bad", "_d", "logits", "_rank"], ascending=[False, True, True, True]
        )
        out.append((label, df.drop(columns=["_d", "_rank", "_bad"]).reset_index(drop=True), caption))
    return out
