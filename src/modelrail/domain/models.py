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

A model owns what lies under its name: its uploads (``uploads/<name>/…`` in the data
bucket), its versions and aliases, its staging service. Which model a trigger belongs
to is read from it (``model_of_upload``, ``resolve``), never guessed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import orjson

from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset.contract import DatasetContract
from modelrail.kernel.errors import ConfigError, NotFound, UnknownModel
from modelrail.kernel.ports import BlobStore

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


@dataclasses.dataclass(frozen=True)
class Definition:
    """A model's pipeline.toml and the contract it names, as added."""

    name: str
    pipeline: str  # pipeline.toml's text
    contract_file: str  # the contract's file name, as ``[model] contract`` gives it
    contract: str  # the contract's JSON text

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
        return {"format": _FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Definition:
        return cls(
            name=str(body["name"]),
            pipeline=str(body["pipeline"]),
            contract_file=str(body["contract_file"]),
            contract=str(body["contract"]),
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
