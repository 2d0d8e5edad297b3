"""The local provider: resources that exist only in iacloud's state, touching no host.

- `random_string`: a random value made once at create and kept (Heat's OS::Heat::RandomString);
  the value is a sensitive attribute, never printed.
- `keypair`: an SSH key pair (OS::Nova::KeyPair): the given public key, or a new ed25519 pair
  made by ssh-keygen, whose private key is a sensitive attribute.
- `none`: a placeholder that does nothing (OS::Heat::None), for dependencies and tests.

Reading one of them returns what was recorded (`ObjectRef.attributes`): there is nothing on a
host to compare with, so they never drift and never leave orphans. Any change replaces them.
"""

from __future__ import annotations

import secrets
import string
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from iacloud.errors import ProviderError
from iacloud.provider import ObjectRef, Observed, Provider, ResourceType
from iacloud.schema import Disruption, Inputs, prop

_CLASSES = {
    "lettersdigits": string.ascii_letters + string.digits,
    "letters": string.ascii_letters,
    "lowercase": string.ascii_lowercase,
    "uppercase": string.ascii_uppercase,
    "digits": string.digits,
    "hexdigits": string.digits + "abcdef",
    "octdigits": string.octdigits,
}


class CharClass(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_: str = prop("lettersdigits", alias="class")
    min: int = prop(1, ge=1, le=512)

    @field_validator("class_")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in _CLASSES:
            raise ValueError(f"unknown character class {v!r}; known: {', '.join(_CLASSES)}")
        return v


class CharSequence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sequence: str = prop(min_length=1, max_length=256)
    min: int = prop(1, ge=1, le=512)


class RandomStringInputs(Inputs):
    length: int = prop(32, update=Disruption.REPLACE, ge=1, le=512)
    character_classes: list[CharClass] = prop([], update=Disruption.REPLACE, max_length=16)
    character_sequences: list[CharSequence] = prop([], update=Disruption.REPLACE, max_length=16)
    salt: str | None = prop(
        None, update=Disruption.REPLACE, description="change it for a new value"
    )


def random_value(inputs: RandomStringInputs) -> str:
    """Heat's rule: each class or sequence contributes at least its `min` characters, the rest
    is drawn from all of them together, and the result is shuffled."""
    pools = [(_CLASSES[c.class_], c.min) for c in inputs.character_classes]
    pools += [(s.sequence, s.min) for s in inputs.character_sequences]
    if not pools:
        pools = [(_CLASSES["lettersdigits"], 0)]
    needed = sum(n for _, n in pools)
    if needed > inputs.length:
        raise ProviderError(
            f"the character classes need {needed} characters, more than length {inputs.length}"
        )
    chars = [secrets.choice(pool) for pool, n in pools for _ in range(n)]
    everything = "".join(dict.fromkeys("".join(p for p, _ in pools)))
    chars += [secrets.choice(everything) for _ in range(inputs.length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


class KeyPairInputs(Inputs):
    key_name: str | None = prop(None, update=Disruption.REPLACE, max_length=255)
    public_key: str | None = prop(
        None, update=Disruption.REPLACE, max_length=16384, description="default: a new key pair"
    )
    save_private_key: bool = prop(False, update=Disruption.REPLACE)

    @field_validator("public_key")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        if v is not None and ("\n" in v.strip() or not v.strip()):
            raise ValueError("a public key is one line, like 'ssh-ed25519 AAAA... comment'")
        return v


class NoneInputs(Inputs):
    pass


class ServerGroupInputs(Inputs):
    policy: Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"] = prop(
        "anti-affinity",
        update=Disruption.REPLACE,
        description="Nova's server group policies; placement reads it at plan time "
        "(iacloud.placement)",
    )


def generate_keypair(comment: str) -> tuple[str, str]:
    """A new ed25519 key pair (private, public) made by ssh-keygen in a private directory."""
    with tempfile.TemporaryDirectory(prefix="iacloud-key-") as tmp:
        key = Path(tmp) / "key"
        try:
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                check=True,
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ProviderError(f"cannot generate a key pair with ssh-keygen: {exc}") from None
        return key.read_text(), key.with_suffix(".pub").read_text().strip()


class _LocalType(ResourceType):
    """Objects that live in state only."""

    def read(self, refs: Sequence[ObjectRef]) -> dict[str, Observed]:
        out = {}
        for ref in refs:
            if ref.id and ref.attributes:
                out[ref.address] = Observed(ref.id, dict(ref.inputs), dict(ref.attributes))
        return out

    def update(
        self, address: str, prior: Observed, inputs: Inputs, changed: frozenset[str]
    ) -> Observed:
        raise ProviderError(f"{self.type_name} cannot change in place: it is replaced")

    def delete(self, address: str, prior: Observed) -> None:
        return None

    def import_(self, address: str, id: str) -> Observed:
        raise ProviderError(f"a {self.type_name} exists only in state: there is nothing to import")


class RandomString(_LocalType):
    type_name = "random_string"
    Inputs = RandomStringInputs
    attributes = ("id", "value")
    sensitive_attributes = ("value",)

    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, RandomStringInputs)
        id = str(uuid.uuid4())
        return Observed(id, inputs.model_dump(), {"id": id, "value": random_value(inputs)})


class KeyPair(_LocalType):
    type_name = "keypair"
    Inputs = KeyPairInputs
    attributes = ("id", "key_name", "public_key", "private_key")
    sensitive_attributes = ("private_key",)

    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, KeyPairInputs)
        name = inputs.key_name or f"{self.provider.stack.name}-{address}"
        private = ""
        public = inputs.public_key
        if public is None:
            private, public = generate_keypair(name)
            if not inputs.save_private_key:
                private = ""
        id = str(uuid.uuid4())
        attributes = {"id": id, "key_name": name, "public_key": public, "private_key": private}
        return Observed(id, inputs.model_dump(), attributes)


class Nothing(_LocalType):
    type_name = "none"
    Inputs = NoneInputs
    attributes = ("id",)

    def create(self, address: str, inputs: Inputs) -> Observed:
        id = str(uuid.uuid4())
        return Observed(id, {}, {"id": id})


class ServerGroup(_LocalType):
    """Nova's server group: a placement policy its member servers (`server_group = ...`) are
    scheduled by; it exists in state only."""

    type_name = "server_group"
    Inputs = ServerGroupInputs
    attributes = ("id", "policy")

    def create(self, address: str, inputs: Inputs) -> Observed:
        assert isinstance(inputs, ServerGroupInputs)
        id = str(uuid.uuid4())
        return Observed(id, inputs.model_dump(), {"id": id, "policy": inputs.policy})


class LocalProvider(Provider):
    name = "local"
    resource_types: ClassVar[tuple[type[ResourceType], ...]] = (
        RandomString,
        KeyPair,
        Nothing,
        ServerGroup,
    )


__all__ = ["LocalProvider", "random_value"]
