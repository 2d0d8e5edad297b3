"""Names of the site catalog (`iacloud.site`) in stacks, resolved at load time into what the
resource types take. One step of `loading.resolve`, after parameters and before declaration,
so it works on the neutral StackDocument whatever front (TOML, HOT) made it.

What a stack may name, and what it becomes:
- server `flavor = "m1.small"`: the flavor's `vcpus`, `memory_mib` and `root_gib` (not for a
  server booted from a `boot_volume`) are set on the server, and `flavor` stays as an input of
  its own (a record of where they came from, shown in the plan with disruption `none`: a
  flavor change is planned as the changes of its sizes, restart for vcpus/memory, live for a
  larger root disk). Giving `flavor` beside one of those fields is an error.
- server or volume `image = "debian-12"` (a string without "/": with one it is an image id):
  one implicit resource per catalog image used, `site-image-debian-12` of type `site_image`,
  and the field becomes `{ get_resource = "site-image-debian-12" }`. A site image is uploaded
  on first use into the default pool, shared by every stack that names it, and left in place
  by destroy (see providers/libvirt/site_image.py). A stack cannot declare `site_image`
  resources itself: their sources are trusted (they come from the operator's site file).
- server `ssh_keys = ["alice"]` (an entry without whitespace: a real key has some) and
  `key_name = "alice"` (HOT's; added in front of ssh_keys, then removed): the public key.
- server `networks = [{ network = "public" }]`: a catalog network's bridge; any other string
  stays what it was (the id, i.e. bridge, of a network).
Values may be literal or `{ get_param = ... }` (anything fully known at load time); values that
need another resource (get_resource, get_attr) are left alone.

The public API for a front (e.g. the HOT front): put the names where the table above says
(`flavor`, `image`, `key_name`/`ssh_keys`, `networks[].network` of type `server`; `image` of
type `volume`) and call `loading.resolve(..., site=...)`; `site_file.load_site(path)` loads
the catalog by its precedence; `SITE_IMAGE_TYPE` and `site_image_name(name)` say what a
catalog image becomes; `network(site, name)` gives a catalog network's bridge, cidr and
gateway (for what a front maps itself, such as a router's external gateway).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from typing import Any

from iacloud import expressions as ex
from iacloud.errors import did_you_mean
from iacloud.loading.diagnostics import Sink
from iacloud.loading.document import StackDocument
from iacloud.loading.parameters import ParameterSet
from iacloud.loading.prepare import prepare
from iacloud.site import ExternalNetwork, SiteCatalog, no_catalog_hint
from iacloud.stack import INDEX_TOKEN

SITE_IMAGE_TYPE = "site_image"
SITE_IMAGE_PREFIX = "site-image-"
FLAVOR_FIELDS = ("vcpus", "memory_mib", "root_gib")
_NOT_NAME_CHAR = re.compile(r"[^A-Za-z0-9_-]")
# a value whose parameter is missing or broken: reported with the parameter already
_REPORTED = object()
_NOUNS = {"flavors": "flavor", "images": "image", "keypairs": "key pair", "networks": "network"}


def site_image_name(image: str) -> str:
    """The implicit resource a catalog image becomes in a stack: 'site-image-<name>', with
    characters a resource name cannot hold made '_' (a hash keeps long names unique)."""
    name = SITE_IMAGE_PREFIX + _NOT_NAME_CHAR.sub("_", image)
    if len(name) > 63 or name != SITE_IMAGE_PREFIX + image:
        digest = hashlib.sha256(image.encode()).hexdigest()[:8]
        name = f"{name[:54]}-{digest}"
    return name


def network(site: SiteCatalog | None, name: str) -> ExternalNetwork | None:
    """A catalog network by name (bridge, cidr, gateway), or None."""
    return site.networks.get(name) if site is not None else None


def resolve_names(
    document: StackDocument, site: SiteCatalog | None, params: ParameterSet, sink: Sink
) -> StackDocument:
    """The document with catalog names replaced (see the module docstring); problems go to
    `sink`. The document is returned unchanged when it names nothing of the catalog."""
    resolver = _Resolver(document, site, params, sink)
    resources: dict[str, Any] = {}
    for name, definition in document.resources.items():
        resources[name] = resolver.resource(name, definition)
    if not resolver.changed:
        return document
    positions = dict(document.positions)
    for i, (name, entry) in enumerate(resolver.implicit.items()):
        resources[name] = entry
        positions[("resources", name)] = len(document.resources) + i
    return dataclasses.replace(document, resources=resources, positions=positions)


class _Resolver:
    def __init__(
        self, document: StackDocument, site: SiteCatalog | None, params: ParameterSet, sink: Sink
    ) -> None:
        self.document, self.site, self.params, self.sink = document, site, params, sink
        self.implicit: dict[str, dict[str, Any]] = {}  # site image resources, by name
        self.changed = False
        self.handlers: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "server": self._server,
            "volume": self._volume,
        }

    def resource(self, name: str, definition: Any) -> Any:
        if not isinstance(definition, dict):
            return definition  # reported by declaration
        rtype = definition.get("type")
        if rtype == SITE_IMAGE_TYPE:
            self.sink.add(
                f"type '{SITE_IMAGE_TYPE}' is reserved for the site catalog's images",
                f"resources.{name}",
                "type",
                'name a catalog image on the server or volume instead: image = "NAME"',
            )
            return definition
        handler = self.handlers.get(rtype) if isinstance(rtype, str) else None
        if handler is None:
            return definition
        props = dict(definition)
        handler(name, props)
        if props != definition:
            self.changed = True
            return props
        return definition

    # ---------------------------------------------------------------- helpers
    def _static(self, raw: Any, name: str, where: str) -> Any:
        """The value when it is known at load time (a literal, get_param...), else None."""
        if isinstance(raw, str):
            return None if INDEX_TOKEN in raw else raw
        if not isinstance(raw, dict):
            return raw
        scratch = Sink(self.sink.file)  # problems are reported when the field is expanded
        value = prepare(raw, where, scratch, f"resources.{name}", self.params)
        if isinstance(value, ex.GetParam):
            return _REPORTED
        if scratch.items or not isinstance(value, (str, int, float, bool, list)):
            return None
        return value

    def _lookup(self, section: str, key: str, name: str, where: str) -> Any:
        """The catalog entry `key` of `section`, or None (reported)."""
        noun = _NOUNS[section]
        address = f"resources.{name}"
        if self.site is None:
            self.sink.add(
                f"{noun} '{key}' names the site catalog, and there is none",
                address,
                where,
                no_catalog_hint(),
            )
            return None
        entries = self.site.section(section)
        if key in entries:
            return entries[key]
        hint = did_you_mean(key, entries)
        if hint is None:
            shown = ", ".join(sorted(entries)[:10]) or "none"
            hint = f"{section} in {self.site.path}: {shown}"
        self.sink.add(
            f"{noun} '{key}' is not in the site catalog {self.site.path}", address, where, hint
        )
        return None

    # ---------------------------------------------------------------- types
    def _server(self, name: str, props: dict[str, Any]) -> None:
        self._flavor(name, props)
        self._image(name, props)
        self._keys(name, props)
        self._networks(name, props)

    def _volume(self, name: str, props: dict[str, Any]) -> None:
        self._image(name, props)

    def _flavor(self, name: str, props: dict[str, Any]) -> None:
        if "flavor" not in props:
            return
        key = self._static(props["flavor"], name, "flavor")
        if key is _REPORTED:
            return
        if not isinstance(key, str):
            self.sink.add(
                "flavor must be a flavor name known at load time (a string or get_param)",
                f"resources.{name}",
                "flavor",
            )
            return
        flavor = self._lookup("flavors", key, name, "flavor")
        if flavor is None:
            return
        given = [f for f in FLAVOR_FIELDS if f in props]
        if given:
            self.sink.add(
                f"flavor '{key}' sets {', '.join(FLAVOR_FIELDS)}: {given[0]} cannot be given "
                "as well",
                f"resources.{name}",
                given[0],
                f"remove {given[0]}, or flavor and give the sizes yourself",
            )
            return
        props["flavor"] = key
        props["vcpus"] = flavor.vcpus
        props["memory_mib"] = flavor.memory_mib
        if flavor.root_gib is not None and "boot_volume" not in props:
            # as Nova: a server booted from a volume has that volume's size, not the flavor's
            props["root_gib"] = flavor.root_gib

    def _image(self, name: str, props: dict[str, Any]) -> None:
        if "image" not in props:
            return
        key = self._static(props["image"], name, "image")
        if not isinstance(key, str) or "/" in key or not key:
            return  # an image id, or a reference to an image resource
        image = self._lookup("images", key, name, "image")
        if image is None:
            del props["image"]  # reported: not a volume id error as well
            return
        implicit = site_image_name(key)
        mine = self.implicit.get(implicit)
        if mine is not None and mine["name"] != key:
            self.sink.add(
                f"catalog images '{mine['name']}' and '{key}' would both become "
                f"resource '{implicit}'",
                f"resources.{name}",
                "image",
                "rename one of them in the site file",
            )
            del props["image"]
            return
        if implicit in self.document.resources:
            self.sink.add(
                f"resource '{implicit}' is the name catalog image '{key}' takes in a stack",
                f"resources.{implicit}",
                hint="rename this resource",
            )
            del props["image"]
            return
        if mine is None:
            self.implicit[implicit] = {
                "type": SITE_IMAGE_TYPE,
                "name": key,
                "source": image.source,
                "format": image.format,
                "sha256": image.sha256,
            }
            self.changed = True
        props["image"] = {"get_resource": implicit}

    def _keys(self, name: str, props: dict[str, Any]) -> None:
        keys: list[Any] = []
        if "key_name" in props:
            key = self._static(props["key_name"], name, "key_name")
            if key is _REPORTED:
                return
            if not isinstance(key, str):
                self.sink.add(
                    "key_name must be a key pair name of the site catalog, known at load time",
                    f"resources.{name}",
                    "key_name",
                )
                del props["key_name"]
                return
            pair = self._lookup("keypairs", key, name, "key_name")
            del props["key_name"]  # resolved, or reported: not an unknown field as well
            if pair is None:
                return
            keys.append(pair.public_key)
        raw = props.get("ssh_keys")
        entries = raw
        if isinstance(raw, dict):  # a list parameter, say
            value = self._static(raw, name, "ssh_keys")
            entries = value if isinstance(value, list) else None
        if raw is not None and not isinstance(entries, list):
            if keys:
                self.sink.add(
                    "key_name adds to ssh_keys, which must then be a list known at load time",
                    f"resources.{name}",
                    "ssh_keys",
                )
            return
        for i, entry in enumerate(entries or ()):
            value = self._static(entry, name, f"ssh_keys[{i}]")
            if isinstance(value, str) and value and not any(c.isspace() for c in value):
                pair = self._lookup("keypairs", value, name, f"ssh_keys[{i}]")
                keys.append(pair.public_key if pair is not None else entry)
            else:
                keys.append(entry)
        if keys or raw is not None:
            props["ssh_keys"] = keys

    def _networks(self, name: str, props: dict[str, Any]) -> None:
        raw = props.get("networks")
        if not isinstance(raw, list):
            return
        if any(isinstance(e, dict) and "site_network" in e for e in raw):
            raw = self._site_networks(name, raw)
            props["networks"] = raw
        if self.site is None or not self.site.networks:
            return
        out = []
        for i, entry in enumerate(raw):
            if isinstance(entry, dict) and "network" in entry:
                key = self._static(entry["network"], name, f"networks[{i}].network")
                net = self.site.networks.get(key) if isinstance(key, str) else None
                if net is not None:
                    entry = {**entry, "network": net.bridge}
            out.append(entry)
        props["networks"] = out

    def _site_networks(self, name: str, raw: list[Any]) -> list[Any]:
        """A HOT server's `{network: NAME}` that is no Net of its template: NAME must be an
        external network of the site catalog (reported when it is not, entry left out)."""
        self.changed = True
        out = []
        for i, entry in enumerate(raw):
            if not (isinstance(entry, dict) and "site_network" in entry):
                out.append(entry)
                continue
            where = f"networks[{i}].network"
            key = self._static(entry["site_network"], name, where)
            if key is _REPORTED:
                continue
            if not isinstance(key, str):
                self.sink.add("a network by name must be known at load time",
                              f"resources.{name}", where)  # fmt: skip
                continue
            if self._lookup("networks", key, name, where) is not None:
                out.append({"network": key})  # the bridge is filled in with the others
        return out
