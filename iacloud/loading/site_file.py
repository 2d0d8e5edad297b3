"""The site file reader: a `site.toml` read within the input limits (as stack files are) and
checked entry by entry, every mistake a diagnostic naming the site file, the entry and the
field. The models and the file's precedence are in `iacloud.site`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from iacloud import limits
from iacloud.errors import UserError
from iacloud.loading.diagnostics import Sink, fail
from iacloud.loading.model_errors import validate_model
from iacloud.loading.toml_front import toml_error_message
from iacloud.site import (
    CATALOG_NAME,
    CATALOG_NAME_RULE,
    ENTRY_MODELS,
    CatalogImage,
    SiteCatalog,
    SiteFile,
    choose_site_file,
)
from iacloud.site_hosts import HOST_NAME, HOST_NAME_RULE


def load_site(explicit: Path | None = None) -> SiteCatalog | None:
    """The catalog a command uses (see `iacloud.site.choose_site_file`), or None when there is
    none. Raises UserError for a named file that is missing or any mistake in the file."""
    choice = choose_site_file(explicit)
    if choice.path is None:
        return None
    if choice.required and not choice.path.exists():
        raise UserError(f"{choice.path}: site file not found (named by {choice.origin})")
    return read_site(choice.path)


def read_site(path: Path) -> SiteCatalog:
    """The site file at `path` as a SiteCatalog; UserError listing every problem."""
    sink = Sink(str(path))
    data = _read(path, sink)
    if data is None:
        fail(sink, (), {})
    top = validate_model(SiteFile, data, sink, "", frozenset())
    sections: dict[str, dict[str, Any]] = {}
    for section, model in ENTRY_MODELS.items():
        raw = getattr(top, section) if top is not None else data.get(section)
        entries: dict[str, Any] = {}
        if isinstance(raw, dict):
            for name, entry in raw.items():
                address = f"{section}.{json.dumps(name) if '.' in name else name}"
                pattern, rule = (
                    (HOST_NAME, HOST_NAME_RULE)
                    if section == "hosts"
                    else (CATALOG_NAME, CATALOG_NAME_RULE)
                )
                if not pattern.fullmatch(name):
                    sink.add(
                        f"invalid name {json.dumps(name, ensure_ascii=False)}: expected {rule}",
                        address,
                    )
                    continue
                if not isinstance(entry, dict):
                    sink.add(f"expected a table, found {type(entry).__name__}", address)
                    continue
                value = validate_model(model, entry, sink, address, frozenset())
                if value is not None:
                    entries[name] = value
        sections[section] = entries
    if sink.items:
        fail(sink, (), {})
    base = path.absolute().parent
    images = {n: _absolute(img, base) for n, img in sections["images"].items()}
    return SiteCatalog(
        path=path,
        flavors=sections["flavors"],
        images=images,
        keypairs=sections["keypairs"],
        networks=sections["networks"],
        hosts=sections["hosts"],
    )


def _absolute(image: CatalogImage, base: Path) -> CatalogImage:
    """A relative path source made absolute against the site file's directory."""
    if "://" in image.source or image.source.startswith("/"):
        return image
    return image.model_copy(update={"source": os.path.normpath(base / image.source)})


def _read(path: Path, sink: Sink) -> dict[str, Any] | None:
    text: str | None = None
    try:
        text = limits.read_text(path)
        return limits.parse_toml(text)
    except FileNotFoundError:
        sink.add("site file not found")
    except limits.InputError as exc:
        sink.add(str(exc).replace("the file", "the site file", 1))
    except ValueError as exc:  # tomllib.TOMLDecodeError
        sink.add(toml_error_message(str(exc), text))
    return None
