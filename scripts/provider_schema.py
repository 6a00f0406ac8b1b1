"""Rebuild Terraform provider schemas from the providers' published CDK bindings:
``make provider-schema``.

The google provider cannot be downloaded on the machines that run ``make test``, so
``terraform validate`` and ``terraform plan`` run against a stand-in provider
(tests/infra/standin) that serves the schema this script writes. The schema comes from
the prebuilt CDK for Terraform bindings on PyPI (``cdktf-cdktf-provider-<name>``): they
are generated from ``terraform providers schema -json`` of one exact provider version
and keep, per resource, data source and nested block, every argument with its type and
whether it is required, every computed-only attribute, and every nested block with its
nesting (list, set, single) and whether it holds at most one element.

Why PyPI and not npm (``@cdktf/provider-google``): the wheel (49 MB) carries the npm
package's tarball (32 MB) byte for byte, so the metadata is the same; pip is already
on every machine that runs ``make``, npm is not.

What the bindings do not keep, and the schema therefore does not say: whether an
optional argument is also computed by the provider (written as plain ``optional``),
exact minimum item counts above one, descriptions, and validation rules.

The output is ``terraform providers schema -json`` for the chosen types, gzipped with
a fixed timestamp so the same input always gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO_ROOT / "terraform" / "testing"

# provider source -> (PyPI package, its version, the provider version it was built from).
# The bindings' package.json records the provider version ("cdktf.provider.version");
# main() checks it.
BINDINGS = {
    "hashicorp/google": ("cdktf-cdktf-provider-google", "16.12.1", "6.50.0"),
    "hashicorp/archive": ("cdktf-cdktf-provider-archive", "11.0.1", "2.7.1"),
    # google_project_service_identity (a service agent created before it is granted
    # anything) exists in the beta provider only; the same release as google.
    "hashicorp/google-beta": ("cdktf-cdktf-provider-google-beta", "16.12.1", "6.50.0"),
    # time_sleep: the wait for IAM propagation between grants and what uses them.
    "hashicorp/time": ("cdktf-cdktf-provider-time", "11.0.1", "0.13.1"),
}

# One argument or block in a *ToHclTerraform function or synthesizeHclAttributes().
ENTRY = re.compile(
    r"^\s+(?P<name>\w+): \{\n"
    r"\s+value: (?P<value>.+),\n"
    r"\s+isBlock: (?P<block>true|false),\n"
    r'\s+type: "(?P<kind>\w+)",\n'
    r'\s+storageClassType: "\w+",\n'
    r"\s+\},?$",
    re.M,
)
TO_HCL = re.compile(r"^function (\w+)ToHclTerraform\(struct\) \{\n(.*?)^\}$", re.M | re.S)
CLASS = re.compile(r"^class (\w+) extends ([\w.]+) \{\n(.*?)^\}$", re.M | re.S)
INTERFACE = re.compile(r"^export interface (\w+)[^{\n]*\{\n(.*?)^\}$", re.M | re.S)
# A property with its doc comment, whose registry link names the Terraform argument
# (the property itself may be renamed, e.g. `build` -> `buildAttribute`).
INTERFACE_PROPERTY = re.compile(
    r"^    /\*\*\n(?P<doc>(?: +\*.*\n)*?)    \*/\n    readonly (?P<camel>\w+)(?P<optional>\??):",
    re.M,
)
REGISTRY_LINK = re.compile(r"#(\w+) \w+#\1\}")
RESOURCE_TYPE = re.compile(r"terraformResourceType: '([\w-]+)'")
HCL_ATTRIBUTES = re.compile(r"synthesizeHclAttributes\(\) \{\n(.*?)^    \}$", re.M | re.S)
# A computed-only attribute: the generator writes this comment before its getter (simple
# types) or before the constructor line that makes its accessor (complex types).
COMPUTED = re.compile(
    r"^\s+// (?P<name>\w+) - computed: true, optional: false, required: false\n(?P<next>.*)\n"
    r"(?=(?P<after>.*)$)",
    re.M,
)
ARGUMENT = re.compile(r"^(?P<fn>.*)\((?:struct|this)\.\w+(?:\.internalValue)?\)$")
ACCESSOR = re.compile(r'new (?:[\w.]+\.)?(?P<cls>\w+)\(this, "(?P<name>\w+)"(?:, (?P<set>\w+))?\)')

PRIMITIVE_FUNCTIONS = {
    "cdktf.stringToHclTerraform": "string",
    "cdktf.numberToHclTerraform": "number",
    "cdktf.booleanToHclTerraform": "bool",
    "cdktf.anyToHclTerraform": "dynamic",
}
GETTER_TYPES: dict[str, Any] = {
    "getStringAttribute": "string",
    "getNumberAttribute": "number",
    "getBooleanAttribute": "bool",
    "getListAttribute": ["list", "string"],
    "getNumberListAttribute": ["list", "number"],
    "getStringMapAttribute": ["map", "string"],
    "getNumberMapAttribute": ["map", "number"],
    "getBooleanMapAttribute": ["map", "bool"],
}
ACCESSOR_TYPES: dict[str, Any] = {
    "StringMap": ["map", "string"],
    "NumberMap": ["map", "number"],
    "BooleanMap": ["map", "bool"],
    "AnyMap": ["map", "dynamic"],
    "StringMapList": ["list", ["map", "string"]],
    "NumberMapList": ["list", ["map", "number"]],
    "BooleanMapList": ["list", ["map", "bool"]],
    "StringListMap": ["map", ["list", "string"]],
    "NumberListMap": ["map", ["list", "number"]],
}


class BindingsError(Exception):
    """The bindings' generated code has a shape this script does not understand."""


@dataclass
class Module:
    """One submodule of the bindings (one resource or data source): its JavaScript and
    type declarations, concatenated (big ones split their structs over several files)."""

    name: str
    js: str = ""
    dts: str = ""
    functions: dict[str, str] = field(default_factory=dict)
    classes: dict[str, tuple[str, str]] = field(default_factory=dict)
    interfaces: dict[str, dict[str, bool]] = field(default_factory=dict)

    def index(self) -> None:
        self.functions = {m[1]: m[2] for m in TO_HCL.finditer(self.js)}
        self.classes = {m[1]: (m[2], m[3]) for m in CLASS.finditer(self.js)}
        self.interfaces = {m[1]: properties(m[2]) for m in INTERFACE.finditer(self.dts)}


def properties(interface_body: str) -> dict[str, bool]:
    """{Terraform argument name: optional} of a config interface."""
    found = {}
    for prop in INTERFACE_PROPERTY.finditer(interface_body):
        link = REGISTRY_LINK.search(prop["doc"])
        found[link[1] if link else prop["camel"]] = prop["optional"] == "?"
    return found


def lower_first(name: str) -> str:
    return name[0].lower() + name[1:]


def upper_first(name: str) -> str:
    return name[0].upper() + name[1:]


class Extractor:
    def __init__(self, module: Module) -> None:
        self.module = module

    def function_type(self, fn: str) -> Any:
        """The cty type of what a *ToHclTerraform mapper expression converts; a nested
        struct comes back as ("struct", name)."""
        fn = fn.strip()
        # TypeScript's compiled call of an imported function: (0, module.fn)
        fn = re.sub(r"^\(0, ([\w.]+)\)$", r"\1", fn)
        if fn in PRIMITIVE_FUNCTIONS:
            return PRIMITIVE_FUNCTIONS[fn]
        list_mapper = re.fullmatch(r"cdktf\.listMapperHcl\((.*), (?:true|false)\)", fn)
        if list_mapper:
            return ["list", self.function_type(list_mapper[1])]
        hash_mapper = re.fullmatch(r"cdktf\.hashMapperHcl\((.*)\)", fn)
        if hash_mapper:
            return ["map", self.function_type(hash_mapper[1])]
        struct = re.fullmatch(r"(?:[\w]+\.)?(\w+)ToHclTerraform", fn)
        if struct and struct[1] in self.module.functions:
            return ("struct", struct[1])
        raise BindingsError(f"{self.module.name}: unknown value mapper {fn!r}")

    def object_type(self, struct: str) -> list[Any]:
        block = self.block(struct, body=self.module.functions[struct], config=upper_first(struct))
        if block.get("block_types"):
            raise BindingsError(f"{self.module.name}: attribute object {struct} has blocks")
        attributes = {
            name: attribute["type"] for name, attribute in block.get("attributes", {}).items()
        }
        return ["object", attributes]

    def cty(self, value: Any, kind: str) -> Any:
        """A mapper type as a cty type: nested structs become objects; ``kind`` tells a
        set from a list (the mapper is the same)."""
        if isinstance(value, tuple):
            return self.object_type(value[1])
        if isinstance(value, list):
            collection = "set" if kind == "set" and value[0] == "list" else value[0]
            return [collection, self.cty(value[1], "")]
        return value

    def block(self, struct: str | None, *, body: str, config: str) -> dict[str, Any]:
        """The schema block of a resource (``struct`` None) or of a nested struct."""
        optional_flags = self.module.interfaces.get(config)
        if optional_flags is None:
            raise BindingsError(f"{self.module.name}: no interface {config}")
        attributes: dict[str, Any] = {}
        block_types: dict[str, Any] = {}
        for entry in ENTRY.finditer(body):
            name, kind = entry["name"], entry["kind"]
            argument = ARGUMENT.match(entry["value"])
            if argument is None:
                raise BindingsError(f"{self.module.name}: {name}: value {entry['value']!r}")
            if name not in optional_flags:
                raise BindingsError(f"{self.module.name}: {config} has no property {name}")
            required = not optional_flags[name]
            mapped = self.function_type(argument["fn"])
            if entry["block"] == "true":
                block_types[name] = self.nested_block(name, mapped, kind, required)
            else:
                attribute: dict[str, Any] = {"type": self.cty(mapped, kind)}
                attribute["required" if required else "optional"] = True
                attributes[name] = attribute
        holder = self.module.classes.get(f"{upper_first(struct)}OutputReference" if struct else "")
        class_body = holder[1] if holder else ""
        for name, cty_type in self.computed_attributes(class_body):
            attributes.setdefault(name, {"type": cty_type, "computed": True})
        result: dict[str, Any] = {}
        if attributes:
            result["attributes"] = dict(sorted(attributes.items()))
        if block_types:
            result["block_types"] = dict(sorted(block_types.items()))
        return result

    def nested_block(self, name: str, mapped: Any, kind: str, required: bool) -> dict[str, Any]:
        single = isinstance(mapped, tuple)
        element = mapped if single else mapped[1]
        if not isinstance(element, tuple):
            raise BindingsError(f"{self.module.name}: block {name} of {element!r}")
        struct = element[1]
        nested = self.block(struct, body=self.module.functions[struct], config=upper_first(struct))
        if kind == "struct":
            return {"nesting_mode": "single", "block": nested}
        if not single and mapped[0] == "map":
            return {"nesting_mode": "map", "block": nested}
        described: dict[str, Any] = {
            "nesting_mode": "set" if kind == "set" else "list",
            "block": nested,
        }
        if required:
            described["min_items"] = 1
        if single:
            described["max_items"] = 1
        return described

    def computed_attributes(self, class_body: str) -> Iterable[tuple[str, Any]]:
        for match in COMPUTED.finditer(class_body):
            name, line = match["name"], match["next"].strip()
            if line.startswith("get "):
                yield name, self.getter_type(name, match["after"].strip(), class_body)
            else:
                yield name, self.accessor_type(name, line)

    def getter_type(self, name: str, body: str, class_body: str) -> Any:
        getter = re.fullmatch(r"return (cdktf\.Fn\.tolist\()?this\.(\w+)\('\w+'\)\)?;", body)
        if getter and getter[2] in GETTER_TYPES:
            cty_type = GETTER_TYPES[getter[2]]
            if getter[1]:  # a set, read through tolist()
                return ["set", cty_type[1]]
            return cty_type
        field_ref = re.fullmatch(r"return this\._(\w+);", body)
        if field_ref:
            assignment = re.search(rf"this\._{field_ref[1]} = (new .*);", class_body)
            if assignment:
                return self.accessor_type(name, assignment[1])
        raise BindingsError(f"{self.module.name}: computed {name}: getter {body!r}")

    def accessor_type(self, name: str, line: str) -> Any:
        accessor = ACCESSOR.search(line)
        if accessor is None:
            raise BindingsError(f"{self.module.name}: computed {name}: {line!r}")
        cls = accessor["cls"]
        if "new cdktf." in line:
            if cls in ACCESSOR_TYPES:
                return ACCESSOR_TYPES[cls]
            raise BindingsError(f"{self.module.name}: computed {name}: accessor {cls}")
        for suffix, collection in (("List", "list"), ("Map", "map"), ("OutputReference", "")):
            if cls.endswith(suffix) and lower_first(cls.removesuffix(suffix)) in (
                self.module.functions
            ):
                element = self.object_type(lower_first(cls.removesuffix(suffix)))
                if not collection:
                    return element
                if collection == "list" and accessor["set"] == "true":
                    return ["set", element]
                return [collection, element]
        raise BindingsError(f"{self.module.name}: computed {name}: accessor {cls}")

    def types(self) -> Iterable[tuple[str, str, dict[str, Any]]]:
        """(kind, Terraform type name, schema) for each resource, data source or
        provider class of the module."""
        for class_name, (base, body) in self.module.classes.items():
            kind = {
                "cdktf.TerraformResource": "resource",
                "cdktf.TerraformDataSource": "data",
                "cdktf.TerraformProvider": "provider",
            }.get(base)
            if kind is None:
                continue
            type_name = RESOURCE_TYPE.search(body)
            attributes = HCL_ATTRIBUTES.search(body)
            if type_name is None or attributes is None:
                raise BindingsError(f"{self.module.name}: class {class_name} is not generated")
            hcl_body = attributes[1]
            if kind == "provider":  # `alias` is Terraform's meta-argument, not the schema's
                hcl_body = re.sub(r"^\s+alias: \{\n(?:.*\n)*?\s+\},\n", "", hcl_body, flags=re.M)
            block = self.block(None, body=hcl_body, config=f"{class_name}Config")
            computed = dict(self.computed_attributes(body))
            for name, cty_type in computed.items():
                block.setdefault("attributes", {}).setdefault(
                    name, {"type": cty_type, "computed": True}
                )
            block["attributes"] = dict(sorted(block.get("attributes", {}).items()))
            yield kind, type_name[1], {"version": 0, "block": block}


def read_bindings(wheel: Path) -> tuple[dict[str, Any], dict[str, Module]]:
    """package.json and the submodules of the npm tarball inside the bindings' wheel."""
    with zipfile.ZipFile(wheel) as archive:
        (inner,) = [n for n in archive.namelist() if n.endswith(".jsii.tgz")]
        tarball = archive.read(inner)
    modules: dict[str, Module] = {}
    package: dict[str, Any] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        for member in tar.getmembers():
            if member.name == "package/package.json":
                package = json.load(tar.extractfile(member))  # type: ignore[arg-type]
                continue
            parts = member.name.split("/")
            if len(parts) < 4 or parts[1] != "lib" or not member.isfile():
                continue
            if not member.name.endswith((".js", ".d.ts")):
                continue
            module = modules.setdefault(parts[2], Module(parts[2]))
            text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
            if member.name.endswith(".d.ts"):
                module.dts += text + "\n"
            else:
                module.js += text + "\n"
    for module in modules.values():
        module.index()
    return package, modules


def provider_schema(wheel: Path, source: str) -> dict[str, Any]:
    package, modules = read_bindings(wheel)
    provider_version = package["cdktf"]["provider"]["version"]
    expected = BINDINGS[source][2]
    if provider_version != expected:
        raise BindingsError(f"{wheel.name} was built from {source} {provider_version}")
    schema: dict[str, Any] = {
        "provider": None,
        "resource_schemas": {},
        "data_source_schemas": {},
    }
    for module in modules.values():
        for kind, type_name, type_schema in Extractor(module).types():
            if kind == "provider":
                schema["provider"] = type_schema
            elif kind == "resource":
                schema["resource_schemas"][type_name] = type_schema
            else:
                schema["data_source_schemas"][type_name] = type_schema
    for key in ("resource_schemas", "data_source_schemas"):
        schema[key] = dict(sorted(schema[key].items()))
    return schema


def schema_path(source: str, directory: Path = SCHEMA_DIR) -> Path:
    """Where the committed schema of ``source`` (e.g. hashicorp/google) lives."""
    namespace, name = source.split("/")
    return directory / f"{namespace}-{name}-{BINDINGS[source][2]}.schema.json.gz"


def write_schema(source: str, schema: dict[str, Any], directory: Path) -> Path:
    package, version, provider_version = BINDINGS[source]
    document = {
        "format_version": "1.0",
        "provider_schemas": {f"registry.terraform.io/{source}": schema},
        # Not part of Terraform's format: where this schema came from.
        "generated_from": {
            "package": f"{package}=={version}",
            "provider_version": provider_version,
            "by": "scripts/provider_schema.py (make provider-schema)",
        },
    }
    path = schema_path(source, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(text)
    return path


def download(package: str, version: str, into: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    subprocess.run([*pip, "--dest", str(into), f"{package}=={version}"], check=True)
    (wheel,) = into.glob("*.whl")
    return wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SCHEMA_DIR)
    parser.add_argument(
        "--wheel-dir", type=Path, help="reuse wheels already downloaded into this folder"
    )
    parser.add_argument("providers", nargs="*", default=sorted(BINDINGS))
    args = parser.parse_args(argv)
    for source in args.providers:
        package, version, _ = BINDINGS[source]
        with tempfile.TemporaryDirectory() as scratch:
            folder = args.wheel_dir or Path(scratch)
            wheels = sorted(folder.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
            wheel = wheels[0] if wheels else download(package, version, folder)
            schema = provider_schema(wheel, source)
            path = write_schema(source, schema, args.out)
        print(
            f"{source}: {len(schema['resource_schemas'])} resources, "
            f"{len(schema['data_source_schemas'])} data sources -> "
            f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path} "
            f"({path.stat().st_size // 1024} KiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
