"""Builds the HTML API reference of dspnet_tf, tfx_pipeline and serving with pdoc.

The reference is generated from the docstrings, so the builder also checks them: it lists every
public class, function and method without a docstring and exits with status 1 when there is
one (the HTML is still written), so `make docs` fails instead of publishing empty entries.

"Public" here: the names in a module's `__all__` if it has one, else the names not starting
with `_` that the module defines itself (not imported from elsewhere), over every public
submodule, plus the methods (and properties) that a public class defines itself, neither
inherited nor dunder. A docstring inherited from a parent class does not count: pdoc would
show it, but it describes the parent, not the override.

    python docs/build_api_reference.py                 # -> docs/api/index.html
    python docs/build_api_reference.py --out /tmp/api  # elsewhere
    python docs/build_api_reference.py --check-only    # docstrings only, no HTML
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterator, List, Sequence, Tuple

# tf.keras must be Keras 2; the switch is read once, when TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Dependencies' deprecation notices (google-cloud's, on import) would drown the progress lines.
warnings.filterwarnings("ignore", category=FutureWarning)

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("dspnet_tf", "tfx_pipeline", "serving")
DEFAULT_OUT = REPO / "docs" / "api"


def _progress(message: str) -> None:
    print(f"[api-docs] {message}", flush=True)


def iter_modules(package_names: Sequence[str] = PACKAGES) -> Iterator[ModuleType]:
    """Imports and yields each package and its public submodules, depth first, sorted by name.

    Submodules whose own name starts with `_` are private (e.g. `dspnet_tf._version`) and are
    skipped, as pdoc skips them.
    """
    import dspnet_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TF)

    for name in package_names:
        package = importlib.import_module(name)
        yield package
        if not hasattr(package, "__path__"):
            continue
        for info in sorted(pkgutil.walk_packages(package.__path__, prefix=f"{name}."),
                           key=lambda i: i.name):
            if any(part.startswith("_") for part in info.name.split(".")):
                continue
            yield importlib.import_module(info.name)


def _defined_in(obj: object, module: ModuleType) -> bool:
    return getattr(obj, "__module__", None) == module.__name__


def public_names(module: ModuleType) -> List[str]:
    """The module's public names: `__all__` if it has one, else its own non-underscore names."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(name for name, value in vars(module).items()
                  if not name.startswith("_") and (inspect.isclass(value) or callable(value))
                  and _defined_in(value, module))


def _own_doc(obj: object) -> str:
    """The docstring the object itself carries (not one inherited through the MRO)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
    else:
        doc = getattr(obj, "__doc__", None)
    return doc.strip() if isinstance(doc, str) else ""


def _own_methods(cls: type) -> Iterator[Tuple[str, object]]:
    """The public methods and properties that `cls` defines itself (not inherited, not dunder)."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            yield name, value
        elif inspect.isfunction(value) or hasattr(value, "python_function"):
            # `hasattr(..., "python_function")`: a method wrapped by @tf.function.
            yield name, value


def undocumented(modules: Sequence[ModuleType]) -> List[str]:
    """Dotted names of the modules, public classes, functions and methods without a docstring."""
    missing = set()
    for module in modules:
        if not _own_doc(module):
            missing.add(module.__name__)
        for name in public_names(module):
            value = getattr(module, name, None)
            if inspect.isclass(value):
                qualname = f"{value.__module__}.{value.__qualname__}"
                if not _own_doc(value):
                    missing.add(qualname)
                for method_name, method in _own_methods(value):
                    if not _own_doc(method):
                        missing.add(f"{qualname}.{method_name}")
            elif inspect.isfunction(value) or hasattr(value, "python_function"):
                target = getattr(value, "python_function", value)
                module_name = getattr(target, "__module__", module.__name__)
                qualname = getattr(target, "__qualname__", name)
                if not _own_doc(value):
                    missing.add(f"{module_name}.{qualname}")
    return sorted(missing)


def build_html(modules: Sequence[ModuleType], out: Path) -> List[Path]:
    """Renders one pdoc page per module into `out`, plus `index.html` and pdoc's `search.js`.

    This is `pdoc.pdoc()` with an explicit module list: pdoc itself skips the submodules of a
    package whose `__all__` does not name them (e.g. `dspnet_tf.layers.*`), which would leave
    most of the classes out of the reference. Docstrings are read as Google style.
    """
    import pdoc.doc
    import pdoc.render

    pdoc.render.configure(docformat="google", show_source=True,
                          footer_text="DSPnet-TF API reference")
    all_modules = {module.__name__: pdoc.doc.Module(module) for module in modules}
    pages = []
    for name, module_doc in all_modules.items():
        page = out / f"{name.replace('.', '/')}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(pdoc.render.html_module(module_doc, all_modules), encoding="utf-8")
        pages.append(page)
    out.mkdir(parents=True, exist_ok=True)
    index = pdoc.render.html_index(all_modules)
    if index:
        (out / "index.html").write_text(index, encoding="utf-8")
        pages.append(out / "index.html")
    search = pdoc.render.search_index(all_modules)
    if search:
        (out / "search.js").write_text(search, encoding="utf-8")
    return pages


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: returns 0, or 1 when some public name has no docstring."""
    parser = argparse.ArgumentParser(
        description="Build the HTML API reference of dspnet_tf, tfx_pipeline and serving with "
                    "pdoc, and fail when a public class, function or method has no docstring.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: docs/api); existing files are overwritten")
    parser.add_argument("--check-only", action="store_true",
                        help="only check the docstrings; write no HTML")
    args = parser.parse_args(argv)

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    start = time.monotonic()
    _progress(f"importing {', '.join(PACKAGES)} and their submodules")
    modules = list(iter_modules())
    _progress(f"imported {len(modules)} modules in {time.monotonic() - start:.0f} s")
    if not args.check_only:
        _progress(f"rendering HTML with pdoc into {args.out}")
        pages = build_html(modules, args.out)
        _progress(f"wrote {len(pages)} pages; open {args.out / 'index.html'}")
    _progress("checking docstrings of modules and public classes, functions and methods")
    missing = undocumented(modules)
    if missing:
        _progress(f"{len(missing)} public names have no docstring:")
        for name in missing:
            print(f"  {name}", flush=True)
        return 1
    _progress(f"all public names are documented ({time.monotonic() - start:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
