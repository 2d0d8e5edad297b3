"""The `site_image` resource type: an image of the site catalog (Glance's model: the image
exists before any stack and outlives it), made by the loader for `image = "NAME"`; a stack
file cannot declare one itself (its source comes from the operator's site file, so it is not
confined to the stack's directory tree the way an `image` source is).

The volume is named by content, not by stack: `iacsite-<name>-<first 12 of sha256>.<format>`
in the default pool (the `iacsite-` prefix is the site's ownership tag: no stack's orphan
search, drift or import takes it). Create uploads it on first use, verified against the
catalog's sha256, under a host-wide lock so two stacks applying at once upload it once; when
the volume is there already, create adopts it (its recorded sha256 or, without a record, one
full read to hash it). Delete only forgets it: destroying a stack leaves the image for the
other stacks and the next apply. Removing a site image is the operator's job
(`virsh vol-delete --pool POOL NAME`, after no server is backed by it).
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import field_validator

from iacloud.errors import Diagnostic, ProviderError
from iacloud.paths import data_root
from iacloud.provider import ObjectRef, Observed, TaggedObject
from iacloud.schema import Disruption, Inputs, prop

from . import storage
from .connection import is_local
from .image import Image, ImageInputs, source_problem
from .pool import Pool
from .tags import SITE_VOLUME_PREFIX

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class SiteImageInputs(ImageInputs):
    name: str = prop(
        update=Disruption.REPLACE, min_length=1, max_length=63, description="the catalog name"
    )
    sha256: str = prop(  # type: ignore[assignment]
        update=Disruption.REPLACE, pattern=r"^[0-9a-fA-F]{64}$", description="required"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}", value):
            raise ValueError("not a catalog image name")
        return value


def site_volume_name(name: str, sha256: str, fmt: str) -> str:
    return f"{SITE_VOLUME_PREFIX}{_UNSAFE.sub('_', name)}-{sha256.lower()[:12]}.{fmt}"


def site_records() -> Path:
    """Where site images' sha256 records and upload locks live: host-wide, not per stack."""
    return data_root() / "site-images"


class SiteImage(Image):
    type_name = "site_image"
    Inputs = SiteImageInputs
    records = "site-images"

    def record_dir(self) -> Path:
        return site_records()

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        assert isinstance(inputs, SiteImageInputs)
        if problem := source_problem(inputs.source, inputs.sha256):
            return [Diagnostic(problem, address=address, field="source")]
        return []

    def _confinement_problem(self, path: Path) -> str | None:
        return None  # the operator's site file named it, not a stack file

    def new_volume_name(self, address: str, inputs: ImageInputs) -> str:
        assert isinstance(inputs, SiteImageInputs)
        return site_volume_name(inputs.name, inputs.sha256, inputs.format)

    def candidate_names(self, ref: ObjectRef) -> list[str]:
        name, sha, fmt = (ref.inputs.get(k) for k in ("name", "sha256", "format"))
        if isinstance(name, str) and isinstance(sha, str) and isinstance(fmt, str):
            return [site_volume_name(name, sha, fmt)]
        return []

    @contextlib.contextmanager
    def _upload_lock(self, name: str) -> Iterator[None]:
        site_records().mkdir(parents=True, exist_ok=True)
        with open(site_records() / f"{name}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, SiteImageInputs)
        name = self.new_volume_name(address, inputs)
        with self._upload_lock(name):
            pool = self.provider.pools.get(self.conn, inputs.pool)
            vol = storage.lookup(pool, name)
            if vol is None:
                return super().create(address, inputs)
            return self._adopt(pool, name, inputs)

    def _adopt(self, pool: Pool, name: str, inputs: SiteImageInputs) -> Observed:
        """The site image another stack (or an earlier apply) uploaded, checked to be it."""
        vol = pool.handle.storageVolLookupByName(name)
        sha = self._uploaded_sha(name)
        if sha != inputs.sha256:
            local = is_local(self.provider.settings.uri)
            sha = storage.sha256_of(self.conn, vol, vol.path() if local else None)
            if sha != inputs.sha256:
                raise ProviderError(
                    f"site image volume {pool.name}/{name} exists with other content (sha256 "
                    f"{sha}, expected {inputs.sha256}): remove it (virsh vol-delete --pool "
                    f"{pool.name} {name}) so it is uploaded again"
                )
            self._sha_file(name).parent.mkdir(parents=True, exist_ok=True)
            self._sha_file(name).write_text(sha + "\n")
        return self._observe(pool, vol, inputs.pool, sha)

    def import_(self, address: str, id: str) -> Observed:
        raise ProviderError("a site image is not imported: name it in the stack (image = NAME)")

    def delete(self, address: str, prior: Observed) -> None:
        """Forget it only: the image belongs to the site, other stacks may be backed by it."""

    def list_tagged(self) -> list[TaggedObject]:
        return []  # no stack owns a site image, so none is ever an orphan
