"""The models an installation holds, each defined by its pipeline.toml and contract.

One installation (one artifact bucket: a ``MODELRAIL_HOME`` locally, one Terraform
deployment in the cloud) holds any number of models. A model's definition is one
object, ``models/<name>/definition.json`` in the artifact bucket, beside its versions:
its ``pipeline.toml`` and dataset contract as they were added (``modelrail add`` or
``init``). Every process reads definitions from there (a function, the training job,
the CLI in any directory), so adding a model needs no new deployment and what runs
is what the installation says, never a file that happens to lie in the working
directory. One object per definition: a reader sees a whole definition, never a new
``pipeline.toml`` beside an old contract.

A definition has versions. ``modelrail contract accept`` writes a new one with its
contract changed (``dataset.evolution``) and the contract's ``version`` raised, and
records with it who accepted it, when, why and from which run (``accepted``); the
definitions it replaced and wrote are kept, ``models/<name>/definitions/<version>.json``
(by contract version), so every version a run was validated against stays readable.
The new one replaces the current one only if that is still the one the proposal was
made against (a generation precondition): two people accepting at once, or an ``add``
meanwhile, is a refusal, never a silent overwrite.

A model owns what lies under its name: its uploads (``uploads/<name>/…`` in the data
bucket), its versions and aliases, its staging service. Which model a trigger belongs
to is read from it (``model_of_upload``, ``resolve``), never guessed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import evolution
from modelrail.domain.dataset.contract import DatasetContract
from modelrail.kernel.errors import ConfigError, NotFound, PreconditionFailed, Refused, UnknownModel
from modelrail.kernel.ports import BlobInfo, BlobStore

# A model's name is a path segment in both buckets and the suffix of its Cloud Run
# staging service (``modelrail-staging-<name>``: at most 49 characters in all).
MODEL_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,28}[a-z0-9])?$")
UPLOADS = "uploads/"
_FORMAT = 1


def check_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise ConfigError(
            f"model name {name!r} must be 1 to 30 lowercase letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen (it names the model's "
            "upload folder and its staging service)"
        )
    return name


def upload_prefix(model: str) -> str:
    """Where the model's uploads go in the data bucket."""
    return f"{UPLOADS}{model}/"


def newest_upload(data: BlobStore, model: str, suffixes: Sequence[str]) -> BlobInfo | None:
    """The model's newest upload (the highest generation) among the files ending in one
    of ``suffixes``: what a retrain naming no data trains on."""
    objects = [
        info for info in data.list(upload_prefix(model)) if info.key.endswith(tuple(suffixes))
    ]
    return max(objects, key=lambda info: info.generation) if objects else None


@dataclasses.dataclass(frozen=True)
class Definition:
    """A model's pipeline.toml and the contract it names, as added."""

    name: str
    pipeline: str  # pipeline.toml's text
    contract_file: str  # the contract's file name, as ``[model] contract`` gives it
    contract: str  # the contract's JSON text
    # Written by ``contract accept``: who, when, why, from which run, what changed.
    accepted: Mapping[str, Any] | None = None

    @classmethod
    def from_files(cls, config_path: Path) -> Definition:
        """The definition in ``config_path`` and the contract it names, both checked
        as every stage checks them."""
        config = PipelineConfig.load(config_path)
        contract_file = _contract_file(config_path.read_bytes())
        definition = cls(
            name=check_name(config.model_name),
            pipeline=config_path.read_text(),
            contract_file=contract_file,
            contract=(config_path.parent / contract_file).read_text(),
        )
        definition.config()  # the same bytes read back give the same configuration
        return definition

    def config(self) -> PipelineConfig:
        where = f"model {self.name!r}'s pipeline.toml"

        def contract_of(name: str) -> DatasetContract:
            if name != self.contract_file:
                raise ConfigError(f"{where} names contract {name!r}, not {self.contract_file!r}")
            return DatasetContract.parse(self.contract.encode(), f"model {self.name!r}'s {name}")

        config = PipelineConfig.parse(self.pipeline.encode(), where, contract_of)
        if config.model_name != self.name:
            raise ConfigError(f"{where} names model {config.model_name!r}, not {self.name!r}")
        return config

    def to_json(self) -> dict[str, Any]:
        body = {"format": _FORMAT, **dataclasses.asdict(self)}
        if self.accepted is None:
            del body["accepted"]  # a definition as added: the bytes it always had
        else:
            body["accepted"] = dict(self.accepted)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Definition:
        accepted = body.get("accepted")
        return cls(
            name=str(body["name"]),
            pipeline=str(body["pipeline"]),
            contract_file=str(body["contract_file"]),
            contract=str(body["contract"]),
            accepted=dict(accepted) if accepted is not None else None,
        )


def _contract_file(raw: bytes) -> str:
    import tomllib

    return str(tomllib.loads(raw.decode())["model"]["contract"])


class Models:
    """The installation's models, their definitions in ``store`` (the artifact bucket)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        # Each model's configuration with the definition's bytes it was parsed from: a
        # long-lived process parses a definition once, and sees a changed one at once.
        self._parsed: dict[str, tuple[bytes, PipelineConfig]] = {}

    @staticmethod
    def key(name: str) -> str:
        return f"models/{name}/definition.json"

    def add(self, definition: Definition) -> bool:
        """Store ``definition`` (a new model, or a new definition of one); False when
        the installation already holds exactly it."""
        data = orjson.dumps(definition.to_json(), option=orjson.OPT_INDENT_2)
        try:
            if self.store.read(self.key(definition.name)).data == data:
                return False
        except NotFound:
            pass
        self.store.write(self.key(definition.name), data, content_type="application/json")
        return True

    @staticmethod
    def archive_key(name: str, version: int) -> str:
        """Where the definition whose contract is ``version`` is kept once accepted
        or replaced by an accepted one."""
        return f"models/{name}/definitions/{version}.json"

    def definition(self, name: str, version: int | None = None) -> Definition:
        """The model's definition now, or the one whose contract was ``version``."""
        current = self._current(name)[0]
        if version is None or current.config().contract.version == version:
            return current
        try:
            data = self.store.read(self.archive_key(name, version)).data
        except NotFound:
            kept = ", ".join(str(v) for v in self.versions(name))
            raise NotFound(
                f"model {name!r} has no contract version {version} (it has {kept})"
            ) from None
        return Definition.from_json(orjson.loads(data))

    def versions(self, name: str) -> list[int]:
        """The contract versions of the model's definitions kept, and the current one's."""
        prefix = f"models/{name}/definitions/"
        kept = {
            int(info.key[len(prefix) :].removesuffix(".json"))
            for info in self.store.list(prefix)
            if info.key.removesuffix(".json")[len(prefix) :].isdigit()
        }
        kept.add(self._current(name)[0].config().contract.version)
        return sorted(kept)

    def accept(
        self,
        name: str,
        changes: Sequence[Mapping[str, Any]],
        *,
        based_on: str,
        accepted: Mapping[str, Any],
    ) -> Definition:
        """Write the model's definition with ``changes`` applied to its contract, as
        its next contract version, recording ``accepted`` with it; ``based_on`` is the
        configuration hash the changes were proposed against. ``Refused`` if the
        definition is no longer that one; ``ConfigError`` if the changed contract is
        one the pipeline refuses (a binary target given a third class)."""
        current, generation = self._current(name)
        config = current.config()
        if config.sha256 != based_on:
            raise Refused(
                f"the definition of model {name!r} changed since the change was proposed "
                f"(its contract is version {config.contract.version} now"
                + _accepted_text(current.accepted)
                + "): upload the data again to be judged under it"
            )
        version = max(self.versions(name)) + 1
        spec = evolution.apply(orjson.loads(current.contract), changes, version)
        changed = dataclasses.replace(
            current,
            contract=orjson.dumps(spec, option=orjson.OPT_INDENT_2).decode() + "\n",
            accepted={**accepted, "version": version, "changes": [dict(c) for c in changes]},
        )
        changed.config()  # the whole definition checked, as every stage will check it
        self._keep(name, config.contract.version, current)
        try:
            self.store.write(
                self.key(name),
                orjson.dumps(changed.to_json(), option=orjson.OPT_INDENT_2),
                if_generation_match=generation,
                content_type="application/json",
            )
        except PreconditionFailed:
            raise Refused(
                f"the definition of model {name!r} was changed by someone else meanwhile: "
                "nothing was written; look at it again"
            ) from None
        self._keep(name, version, changed)
        return changed

    def _keep(self, name: str, version: int, definition: Definition) -> None:
        """Keep ``definition`` as contract ``version``'s, unless one is kept already."""
        with contextlib.suppress(PreconditionFailed):  # kept when accepted or replaced
            self.store.write(
                self.archive_key(name, version),
                orjson.dumps(definition.to_json(), option=orjson.OPT_INDENT_2),
                if_generation_match=0,
                content_type="application/json",
            )

    def _current(self, name: str) -> tuple[Definition, int]:
        try:
            blob = self.store.read(self.key(name))
        except NotFound:
            raise UnknownModel(self._unknown(name)) from None
        return Definition.from_json(orjson.loads(blob.data)), blob.generation

    def names(self) -> list[str]:
        """Every model installed, sorted."""
        return sorted(
            info.key.split("/")[1]
            for info in self.store.list("models/")
            if info.key == self.key(info.key.split("/")[1])
        )

    def config(self, name: str) -> PipelineConfig:
        """The model's configuration as its definition says now (``UnknownModel`` if
        it is not installed)."""
        try:
            data = self.store.read(self.key(name)).data
        except NotFound:
            raise UnknownModel(self._unknown(name)) from None
        parsed = self._parsed.get(name)
        if parsed is None or parsed[0] != data:
            parsed = self._parsed[name] = (data, Definition.from_json(orjson.loads(data)).config())
        return parsed[1]

    def resolve(self, name: str | None) -> str:
        """The model a command or a retrain request means: the one it names (whether it
        is installed shows when its configuration is read: ``config``), or, naming
        none, the only one installed. Only the latter lists the installation, which
        holds every model's versions: an event naming its model costs one read."""
        if name is not None:
            return name
        names = self.names()
        if len(names) == 1:
            return names[0]
        if not names:
            raise UnknownModel(
                "no model is installed yet: add one with `modelrail init CSV --target COL` "
                "or `modelrail add pipeline.toml`"
            )
        raise UnknownModel(
            f"{len(names)} models are installed ({', '.join(names)}): name one "
            '(--model NAME, or "model" in a retrain request)'
        )

    def model_of_upload(self, object_name: str) -> str:
        """The model an upload belongs to: the folder under ``uploads/`` it lies in
        (whether that model is installed shows when its configuration is read)."""
        folder, _, rest = object_name.removeprefix(UPLOADS).partition("/")
        if not object_name.startswith(UPLOADS) or not rest:
            raise UnknownModel(
                f"{object_name!r} is not in a model's upload folder: upload to "
                f"uploads/<model>/… ({self._installed()})"
            )
        return folder

    def _installed(self) -> str:
        names = self.names()
        return f"installed: {', '.join(names)}" if names else "no model is installed"

    def _unknown(self, name: str) -> str:
        return f"no model {name!r} is installed ({self._installed()})"


def _accepted_text(accepted: Mapping[str, Any] | None) -> str:
    if accepted is None:
        return ""
    return f", accepted by {accepted['who']} at {accepted['at']} from run {accepted['run_id']}"
