"""The site: the parameters page, the staged sources, the vendored web assets (MathJax, the widget
manager) and the jupyter-book build into ``_build/html``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


from ..models.profiles import PROFILES
from .runner import BOOK, BUILD, ChapterFailed, REPO, STAGE, chapter_names, hide_injected_parameters, profile_params


def parameters_page() -> str:
    """Markdown for the front matter's page listing every chapter's parameters and profile values."""
    import papermill as pm

    lines = [
        "# Chapter parameters",
        "",
        "Every chapter is a papermill notebook. Re-run one with other values, for example",
        "",
        "```bash",
        ".venv/bin/papermill book/01_training.ipynb out.ipynb -p k 40 -p epochs 2",
        ".venv/bin/papermill book/02_gradient_search.ipynb out.ipynb -y \"$(.venv/bin/python -m vqtto.book params full 02_gradient_search)\"",
        "```",
        "",
        "Lists go through `-y`/`-f` YAML. Unknown names and out-of-range values stop the chapter at once",
        "with a message naming the parameter. The profiles' columns are the values `make book PROFILE=...`",
        "passes (`params/<profile>.yaml`); an empty cell means the notebook's default.",
        "",
    ]
    for chapter in chapter_names():
        declared = pm.inspect_notebook(str(BOOK / f"{chapter}.ipynb"))
        per_profile = {p: profile_params(p, chapter) for p in PROFILES}
        lines += [f"## `{chapter}`", "", "| parameter | default | meaning | smoke | full |", "|---|---|---|---|---|"]
        for name, info in declared.items():
            cells = [f"`{per_profile[p][name]}`" if name in per_profile[p] and name != "profile" else ""
                     for p in ("smoke", "full")]
            meaning = info["help"].replace("|", "\\|")
            lines.append(f"| `{name}` | `{info['default']}` | {meaning} | {cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def stage_sources(stage: Path = STAGE) -> None:
    """Copy the book's Markdown pages, config and bibliography next to the executed notebooks,
    and write the generated parameters page."""
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "parameters.md").write_text(parameters_page())
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, stage / name)
    for path in BOOK.iterdir():
        if path.suffix in (".md", ".bib", ".png", ".svg"):
            shutil.copy2(path, stage / path.name)


# Front-end assets the site would otherwise load from CDNs. They are fetched from the npm
# registry at build time and copied to _static/offline/ through `html_static_path: [_vendor]`;
# they must not sit in a `_static/` folder of the book, which jupyter-book scans for scripts
# to inject into every page.
NPM_DIR = BUILD / "npm"
MATHJAX = "mathjax@3.2.2"
REQUIREJS = "requirejs@2.3.8"


def html_manager_spec() -> str:
    """The html-manager version range that matches the installed ipywidgets."""
    import ipywidgets

    return f"@jupyter-widgets/html-manager@{ipywidgets._version.__html_manager_version__}"


def vendor_web_assets(dest: Path = STAGE / "_vendor" / "offline") -> dict:
    """Install MathJax, RequireJS and the widgets html-manager with npm; copy what pages load.

    Returns the installed versions (also written to ``dest/versions.json``).
    """
    import json

    specs = [MATHJAX, REQUIREJS, html_manager_spec()]
    stamp = NPM_DIR / "specs.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != specs:
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(NPM_DIR), *specs],
                       check=True)
        stamp.write_text(json.dumps(specs))
    mods = NPM_DIR / "node_modules"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(mods / "mathjax" / "es5", dest / "mathjax" / "es5")
    shutil.copy2(mods / "requirejs" / "require.js", dest / "require.js")
    shutil.copy2(Path(__file__).parent / "site_assets" / "mathjax2-shim.js", dest / "mathjax2-shim.js")
    hm = mods / "@jupyter-widgets" / "html-manager" / "dist"
    (dest / "html-manager").mkdir()
    shutil.copy2(hm / "embed-amd.js", dest / "html-manager" / "embed-amd.js")
    # The manager's icon fonts are fetched relative to RequireJS's base URL (the page's folder),
    # at @jupyter-widgets/html-manager/dist/: `html_extra_path: [_vendor_extra]` puts them there.
    fonts = dest.parent.parent / "_vendor_extra" / "@jupyter-widgets" / "html-manager" / "dist"
    if fonts.exists():
        shutil.rmtree(fonts)
    fonts.mkdir(parents=True)
    for f in hm.iterdir():
        if f.suffix != ".js":
            shutil.copy2(f, fonts / f.name)
    versions = {name: json.loads((mods / name / "package.json").read_text())["version"]
                for name in ("mathjax", "requirejs", "@jupyter-widgets/html-manager")}
    (dest / "versions.json").write_text(json.dumps(versions, indent=2))
    return versions


def build_site(stage: Path = STAGE, html: Path = BUILD / "html") -> Path:
    """Render the executed chapters in ``stage`` into the static site ``html``; return ``html``.

    Refuses to build when a chapter has not been executed, so a partial run is never
    presented as a complete book.
    """
    missing = [c for c in chapter_names() if not (stage / f"{c}.ipynb").exists()]
    if missing:
        raise ChapterFailed(f"chapters {missing} have not been executed; run `python -m vqtto.book run` first")
    for old in stage.glob("*.ipynb"):  # executed copies of chapters that were renamed or removed since
        if old.stem not in chapter_names():
            old.unlink()
    for executed in stage.glob("*.ipynb"):  # also chapters executed before the tag was added
        hide_injected_parameters(executed)
    stage_sources(stage)
    vendor_web_assets(stage / "_vendor" / "offline")
    shutil.copy2(Path(__file__).parent / "site_assets" / "vqtto.css", stage / "_vendor" / "vqtto.css")
    out = stage.parent / f"{stage.name}-site"
    subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(stage), "--path-output", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(out / "_build" / "html", html)
    return html
