"""The static explorer: a dropdown and a slider jslink-ed to stacks of precomputed images."""

import base64

import ipywidgets as widgets
import pytest

from vqtto.book.widgets import image_widget, live_explorer, static_explorer

MODES = ["all", "single", "top"]
ALPHAS = ["0.01", "0.1", "1"]


def _panels():
    return {(m, a): f"{m}-{a}".encode() for m in MODES for a in ALPHAS}


def test_structure_children_and_links():
    box = static_explorer(_panels(), MODES, ALPHAS)
    controls, outer = box.children
    dropdown, slider = controls.children
    assert isinstance(dropdown, widgets.Dropdown) and dropdown.description == "masking"
    assert isinstance(slider, widgets.SelectionSlider) and slider.description == "alpha"
    assert list(slider.options) == ALPHAS and list(dropdown.options) == MODES
    assert isinstance(outer, widgets.Stack) and len(outer.children) == len(MODES)
    for m, inner in zip(MODES, outer.children):
        assert isinstance(inner, widgets.Stack) and len(inner.children) == len(ALPHAS)
        for a, leaf in zip(ALPHAS, inner.children):
            src = leaf.value.split("base64,")[1].split('"')[0]
            assert base64.b64decode(src) == f"{m}-{a}".encode()  # the right panel in the right slot
    links = box._vqtto_links
    assert all(type(l).__name__ == "Link" for l in links) and len(links) == 1 + len(MODES)
    assert (links[0].source, links[0].target) == ((dropdown, "index"), (outer, "selected_index"))
    assert {(l.source, l.target[1]) for l in links[1:]} == {((slider, "index"), "selected_index")}
    assert [l.target[0] for l in links[1:]] == list(outer.children)


def test_widget_state_holds_links():
    box = static_explorer(_panels(), MODES, ALPHAS)
    state = widgets.Widget.get_manager_state(drop_defaults=True)["state"]
    for link in box._vqtto_links:
        assert link.model_id in state and state[link.model_id]["model_name"] == "LinkModel"


def test_missing_panel_is_refused():
    panels = _panels()
    del panels[("top", "1")]
    with pytest.raises(ValueError, match="missing 1"):
        static_explorer(panels, MODES, ALPHAS)


def test_image_widget_and_live_explorer():
    assert image_widget(b"\x89PNG").value.startswith('<img src="data:image/png;base64,')
    seen = []
    w = live_explorer(lambda pair, masking, alpha: seen.append((pair, masking, alpha)), alphas=[0.1, 1.0], masks=MODES, pairs=3)
    assert isinstance(w, widgets.interactive) and seen  # it ran once with the defaults
    assert seen[-1] == (0, "all", 0.1)
