"""A small Sphinx extension for the book's offline site (listed in _config.yml).

jupyter-book always loads sphinx-thebe, whose configuration script ends up on every page
twice (a JavaScript error, "THEBE_JS_URL has already been declared") and names a CDN URL.
The book has no live-kernel buttons, so the thebe scripts are dropped, and any remaining
duplicate script is kept once.
"""

from __future__ import annotations


def _key(script) -> tuple:
    attrs = getattr(script, "attributes", {}) or {}
    return (getattr(script, "filename", str(script)), tuple(sorted((k, str(v)) for k, v in attrs.items())))


def _is_thebe(script) -> bool:
    attrs = getattr(script, "attributes", {}) or {}
    return "thebe" in str(getattr(script, "filename", "") or "") or "THEBE_JS_URL" in str(attrs.get("body", ""))


def clean_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _key(script)
        if key in seen or _is_thebe(script):
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", clean_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
