"""Controls that work in the rendered book without a kernel, and their live counterparts.

A static explorer shows precomputed images and switches between them on the client side:

- every result is an ``ipywidgets.HTML`` holding a base64 PNG,
- for each outer option (e.g. a masking mode) an inner ``ipywidgets.Stack`` with one child per
  inner option (e.g. an alpha value),
- an outer ``Stack`` of those inner stacks,
- a ``Dropdown`` whose ``index`` is ``jslink``-ed to the outer stack's ``selected_index``, and a
  ``SelectionSlider`` whose ``index`` is ``jslink``-ed to every inner stack's ``selected_index``.

``jslink`` runs in the browser's widget manager, so the controls keep working in a static page
once the notebook's widget state is stored (papermill/nbclient ``store_widget_state``).
"""

from __future__ import annotations

import base64
import io
from typing import Callable, Mapping, Sequence

import ipywidgets as widgets


def png_bytes(fig, dpi: int = 80) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_widget(png: bytes, alt: str = "") -> widgets.HTML:
    """An HTML widget showing ``png`` inline (base64), readable without a kernel."""
    data = base64.b64encode(png).decode("ascii")
    return widgets.HTML(value=f'<img src="data:image/png;base64,{data}" alt="{alt}" style="max-width:100%"/>')


def static_explorer(panels: Mapping[tuple[str, str], bytes], outer: Sequence[str], inner: Sequence[str], *,
                    outer_label: str = "masking", inner_label: str = "alpha") -> widgets.VBox:
    """A dropdown (``outer``) and a selection slider (``inner``) over precomputed PNG panels.

    Args:
        panels: ``(outer option, inner option) -> PNG bytes`` for every pair of options.
        outer: the dropdown's options, in order (e.g. masking modes).
        inner: the slider's options as strings, in order (e.g. alpha values).
        outer_label, inner_label: the controls' descriptions.

    Returns:
        ``VBox([HBox([dropdown, slider]), outer_stack])``; ``outer_stack.children[i].children[j]``
        shows ``panels[(outer[i], inner[j])]``.
    """
    outer, inner = [str(o) for o in outer], [str(i) for i in inner]
    if not outer or not inner:
        raise ValueError(f"outer and inner options must be non-empty, got {len(outer)} and {len(inner)}")
    missing = [(o, i) for o in outer for i in inner if (o, i) not in panels]
    if missing:
        raise ValueError(f"panels is missing {len(missing)} of the {len(outer) * len(inner)} combinations, e.g. {missing[0]}")
    # Wide enough for the longest option (about 0.6 em per character), so no choice is cut off.
    wide = widgets.Layout(width=f"{min(40, 8 + 0.6 * max(map(len, outer))):.0f}em")
    dropdown = widgets.Dropdown(options=outer, index=0, description=outer_label, layout=wide,
                                style={"description_width": "initial"})
    slider = widgets.SelectionSlider(options=inner, index=0, description=inner_label, continuous_update=True)
    stacks = [widgets.Stack([image_widget(panels[(o, i)], alt=f"{outer_label}={o}, {inner_label}={i}") for i in inner],
                            selected_index=0) for o in outer]
    outer_stack = widgets.Stack(stacks, selected_index=0)
    links = [widgets.jslink((dropdown, "index"), (outer_stack, "selected_index"))]
    links += [widgets.jslink((slider, "index"), (stack, "selected_index")) for stack in stacks]
    box = widgets.VBox([widgets.HBox([dropdown, slider]), outer_stack])
    box._vqtto_links = links  # keep the links alive with the box (and let tests inspect them)
    return box


def live_explorer(show: Callable[..., None], *, alphas: Sequence[float], masks: Sequence[str], pairs: int) -> widgets.Widget:
    """An ``ipywidgets.interactive`` explorer that re-runs a search in a live kernel.

    Args:
        show: ``show(pair=int, masking=str, alpha=float)`` draws the traversal.
        alphas: the slider's values; masks: the dropdown's options; pairs: how many pairs to offer.
    """
    return widgets.interactive(
        show,
        pair=widgets.IntSlider(min=0, max=max(0, pairs - 1), value=0, description="pair"),
        masking=widgets.Dropdown(options=list(masks), description="masking"),
        alpha=widgets.SelectionSlider(options=[(f"{a:g}", float(a)) for a in alphas], description="alpha"),
    )
