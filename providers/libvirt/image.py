"""The `image` resource type: a read-only base image in a storage pool (Glance).

The source (a path relative to the stack file, a file:// or an http(s):// URL) is streamed
into a new pool volume with `virStorageVol.upload`, hashed on the way: a given sha256 must
match (it is required for http(s)), else the volume is deleted and nothing is left. The
format is never probed: the user states it, a qcow2 source is checked with
`qemu-img info -f qcow2` to have no backing file or external data file (which could make
QEMU read any file of the host), and the format is recorded in the volume's name.
Any change replaces the image.

The sha256 attribute is kept beside the stack's data (data_dir/images/<volume>.sha256):
a pool volume has no room for it, and re-hashing on every read would cost a full read.
The inputs libvirt cannot show (source, the given sha256, how the pool was written) are
recorded there too (`<volume>.inputs.json`). A read reports format and pool only; the
engine keeps the recorded source and sha256.

Import hashes the volume (one full read: of the file when libvirtd is local, else through a
libvirt stream) and takes the recorded inputs when that hash is the one uploaded: the object
is then recorded exactly as its create recorded it. Without such a record (an image not made
by this stack, or changed since its upload) nothing says where the bytes came from: the
source is reported as the volume's own file and the sha256 as the bytes' hash, so a stack
naming another source plans a replacement.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import libvirt
from pydantic import field_validator

from iacloud import paths
from iacloud.errors import Diagnostic, ProviderError
from iacloud.provider import Collision, ObjectRef, Observed, TaggedObject
from iacloud.schema import Disruption, Inputs, prop

from . import storage
from .base import StorageResource
from .connection import is_local
from .pool import Pool
from .tags import PoolName, format_of, volume_name

QEMU_IMG_TIMEOUT = 60


class ImageInputs(Inputs):
    source: str = prop(
        update=Disruption.REPLACE,
        min_length=1,
        max_length=4096,
        description="a path relative to the stack file, a file:// or an http(s):// URL",
    )
    format: Literal["qcow2", "raw"] = prop(
        update=Disruption.REPLACE, description="the image's format: never guessed"
    )
    sha256: str | None = prop(
        None,
        update=Disruption.REPLACE,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="verified on upload; required for http(s) sources",
    )
    pool: PoolName | None = prop(
        None, update=Disruption.REPLACE, description="default: the provider's"
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if "\0" in value or "\n" in value:
            raise ValueError("must not contain NUL or newline characters")
        return value


def source_problem(source: str, sha256: str | None) -> str | None:
    scheme = urlsplit(source).scheme.lower() if "://" in source else ""
    if scheme in ("http", "https") and not sha256:
        return "an http(s) source needs a sha256"
    if scheme not in ("", "file", "http", "https"):
        return f"unsupported source scheme {scheme!r} (use a path, file://, http:// or https://)"
    return None


def qemu_img_info(path: str, fmt: str) -> dict:
    """`qemu-img info` with the format forced (-f), so the file is never probed."""
    argv = ["qemu-img", "info", "-f", fmt, "--output=json", "-U", "--", path]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderError(f"cannot run qemu-img info on {path}: {exc}") from exc
    if out.returncode != 0:
        raise ProviderError(f"{path} is not a valid {fmt} image: {out.stderr.strip()}")
    return json.loads(out.stdout)


def check_qcow2(path: str) -> None:
    data = qemu_img_info(path, "qcow2")
    if data.get("backing-filename") or data.get("full-backing-filename"):
        raise ProviderError(
            f"{path} has a backing file ({data.get('backing-filename')}): an image must be "
            "self-contained (qemu-img convert -O qcow2 it first)"
        )
    specific = (data.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise ProviderError(f"{path} uses an external data file: an image must be self-contained")


class Image(StorageResource):
    type_name = "image"
    replace_collisions = (
        Collision("the image volume name in its pool (stack id, address and format)",
                  unless=("format", "pool")),
    )  # fmt: skip
    Inputs = ImageInputs
    attributes = ("id", "path", "size_bytes", "virtual_size_bytes", "sha256")
    role = "image"
    records = "images"

    def check(self, address: str, inputs: Inputs, prior: Observed | None) -> list[Diagnostic]:
        assert isinstance(inputs, ImageInputs)
        problem = source_problem(inputs.source, inputs.sha256)
        if problem is None and (local := self._local_path(inputs.source)) is not None:
            problem = self._confinement_problem(local)
        if problem:
            return [Diagnostic(problem, address=address, field="source")]
        return []

    def _local_path(self, source: str) -> Path | None:
        """A path or file:// source as an absolute path; None for a URL to download."""
        parts = urlsplit(source) if "://" in source else None
        if parts is not None and parts.scheme.lower() != "file":
            return None
        path = Path(unquote(parts.path) if parts is not None else source)
        return path if path.is_absolute() else self.provider.stack.directory / path

    def _confinement_problem(self, path: Path) -> str | None:
        roots = paths.image_roots(self.provider.settings.image_roots)
        return paths.image_source_problem(path, self.provider.stack.directory, roots)

    # ---------------------------------------------------------------- create
    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, ImageInputs)
        if problem := source_problem(inputs.source, inputs.sha256):
            raise ProviderError(problem)
        conn = self.conn
        pool = self.provider.pools.get(conn, inputs.pool)
        name = self.new_volume_name(address, inputs)
        if storage.lookup(pool, name) is not None:
            raise ProviderError(f"volume {pool.name}/{name} already exists")
        with self._local_source(inputs) as path:
            if inputs.format == "qcow2":
                check_qcow2(str(path))
            size = path.stat().st_size
            vol = storage.create(
                pool,
                # created raw so libvirt writes nothing into it; the bytes come from the upload
                storage.volume_xml(name, max(size, 1), "raw", mode="0444"),
                f"image volume {name}",
            )
            try:
                with open(path, "rb") as f:
                    sha = storage.upload(conn, vol, storage.file_chunks(f), size, inputs.sha256)
                if inputs.format == "qcow2" and is_local(self.provider.settings.uri):
                    check_qcow2(vol.path())  # what QEMU will read, not what we read
                self._sha_file(name).parent.mkdir(parents=True, exist_ok=True)
                self._sha_file(name).write_text(sha + "\n")
                self.save_inputs(
                    name, {"source": inputs.source, "sha256": inputs.sha256, "pool": inputs.pool}
                )
                with contextlib.suppress(libvirt.libvirtError):
                    pool.handle.refresh(0)  # libvirt re-reads the uploaded file's sizes
                vol = pool.handle.storageVolLookupByName(name)
                return self._observe(pool, vol, inputs.pool, sha)
            except BaseException:
                storage.delete(vol)
                self._sha_file(name).unlink(missing_ok=True)
                self.drop_inputs(name)
                raise

    def new_volume_name(self, address: str, inputs: ImageInputs) -> str:
        return volume_name(self.provider.stack.id, address, inputs.format, self.role)

    @contextlib.contextmanager
    def _local_source(self, inputs: ImageInputs) -> Iterator[Path]:
        """The source as a local file: a path as it is, a URL downloaded (and verified)."""
        src = inputs.source
        path = self._local_path(src)
        if path is not None:
            if problem := self._confinement_problem(path):
                raise ProviderError(problem)
            if not path.is_file():
                raise ProviderError(f"image source {path} is not a file")
            yield path
            return
        tmpdir = self.provider.stack.data_dir / "downloads"
        tmpdir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmpdir, suffix=".part")
        try:
            digest = hashlib.sha256()
            timeout = self.provider.settings.download_timeout
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(src, timeout=timeout) as r:
                    while chunk := r.read(storage.CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            except OSError as exc:
                raise ProviderError(f"downloading {src}: {exc}") from exc
            if inputs.sha256 and digest.hexdigest() != inputs.sha256.lower():
                raise ProviderError(
                    f"sha256 mismatch for {src}: expected {inputs.sha256.lower()}, "
                    f"got {digest.hexdigest()}"
                )
            yield Path(tmp)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _sha_file(self, name: str) -> Path:
        return self.record_dir() / f"{name}.sha256"

    def content_sha256(self, image_id: str, path: str) -> str:
        """The sha256 of an image's bytes on the default host: as recorded when it was
        uploaded, else read (a catalog image, or a record that was lost)."""
        pool_name, name = storage.split_id(image_id, "image id")
        recorded = self._uploaded_sha(name)
        if recorded:
            return recorded
        pool = self.provider.pools.find(self.conn, pool_name)
        vol = storage.lookup(pool, name) if pool else None
        if pool is None or vol is None:
            raise ProviderError(f"image {image_id} does not exist")
        local = is_local(self.provider.settings.uri)
        return storage.sha256_of(self.conn, vol, path if local else None)

    def of_copy(self, digest: str) -> str | None:
        """The id of the stack's image whose bytes a host's copy holds (the copy is named by
        their sha256, `host_context.copy_digest`), by the sha256 recorded at its upload; None
        when no image of the stack has them."""
        for sha_file in sorted(self.record_dir().glob("*.sha256")):
            name = sha_file.name.removesuffix(".sha256")
            if (self._uploaded_sha(name) or "")[:32] != digest:
                continue
            written = (self.load_inputs(name) or {}).get("pool")
            pool_name = written if isinstance(written, str) else self.provider.settings.pool
            pool = self.provider.pools.find(self.conn, pool_name)
            if pool is not None and storage.lookup(pool, name) is not None:
                return f"{pool.name}/{name}"
        return None

    def _uploaded_sha(self, name: str) -> str | None:
        try:
            return self._sha_file(name).read_text().strip() or None
        except OSError:
            return None

    # ---------------------------------------------------------------- read
    def _observe(
        self, pool: Pool, vol: libvirt.virStorageVol, recorded_pool: object, sha: str | None
    ) -> Observed:
        info = storage.info(pool, vol)
        if sha is None:
            sha = self._uploaded_sha(info.name)
        inputs: dict[str, object] = {"pool": self.observed_pool(pool.name, recorded_pool)}
        if fmt := format_of(info.name):
            inputs["format"] = fmt
        return Observed(
            id=info.id,
            inputs=inputs,
            attributes={
                "id": info.id,
                "path": info.path,
                "size_bytes": info.physical if info.physical is not None else info.allocation,
                "virtual_size_bytes": info.capacity,
                "sha256": sha,
            },
        )

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        def observe(pool: Pool, vol: libvirt.virStorageVol, ref: ObjectRef) -> Observed:
            recorded_sha = ref.inputs.get("sha256")
            sha = recorded_sha.lower() if isinstance(recorded_sha, str) else None
            return self._observe(pool, vol, ref.inputs.get("pool"), sha)

        return self.observe_located(refs, observe)

    def import_(self, address: str, id: str) -> Observed:
        pool_name, name = storage.split_id(id, "image id")
        pool = self.provider.pools.find(self.conn, pool_name)
        vol = storage.lookup(pool, name) if pool else None
        if pool is None or vol is None:
            raise ProviderError(f"no image volume {id}")
        if format_of(name) is None:
            raise ProviderError(
                f"cannot tell the format of {id}: its name must end in .qcow2 or .raw"
            )
        if why := self.wrong_role(name):
            raise ProviderError(f"cannot import {id} as an image: {why}")
        local = is_local(self.provider.settings.uri)
        # the bytes as they are now: one full read
        digest = storage.sha256_of(self.conn, vol, vol.path() if local else None)
        record = self.load_inputs(name) if self._uploaded_sha(name) == digest else None
        if record is not None and not isinstance(record.get("source"), str):
            record = None
        obs = self._observe(pool, vol, self.recorded_pool(pool_name, record), digest)
        if record is not None:
            obs.inputs.update(source=record["source"], sha256=record.get("sha256"))
        else:
            path = str(obs.attributes["path"])
            source = Path(path).as_uri() if path.startswith("/") else path
            obs.inputs.update(source=source, sha256=digest)
        return obs

    # ---------------------------------------------------------------- update, delete
    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        raise ProviderError("an image cannot change in place; it is replaced")

    def delete(self, address: str, prior: Observed) -> None:
        if not prior.id:
            return
        pool_name, name = storage.split_id(prior.id, "image id")
        pool = self.provider.pools.find(self.conn, pool_name)
        if pool is not None:
            storage.delete(storage.lookup(pool, name))
        self._sha_file(name).unlink(missing_ok=True)
        self.drop_inputs(name)

    def list_tagged(self) -> list[TaggedObject]:
        return [t for t in self.tagged_volumes(("image",)) if t.stack_id is not None]
