"""A stand-in Terraform provider: the real provider's schema, none of its API.

Terraform installs and starts it as it would ``terraform-provider-google`` (the tests
lay out a filesystem mirror holding a launcher script and name it in a CLI
configuration), so ``terraform validate`` and ``terraform plan`` check the
configuration against the schema of the exact provider version that
scripts/provider_schema.py rebuilt, offline.

What it answers, over go-plugin's handshake (with automatic mutual TLS) and protocol 5:
- the schema: every optional argument is served as optional *and computed*, because
  the bindings the schema comes from do not tell which optional arguments the
  provider fills in itself; a plan then shows an unset optional argument as
  "known after apply" instead of wrongly promising null;
- validation: on top of Terraform's own checks against the schema (unknown arguments,
  missing required ones, blocks written as arguments, block counts), a required
  argument that evaluates to null and a value for a computed-only attribute fail;
- a plan: the proposed state with every unset computed attribute unknown;
- a data source read: the configuration with placeholders for the computed attributes.
It never creates anything: ``apply`` is not implemented.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import json
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.infra.standin import tfplugin5
from tests.infra.standin.cty import UNKNOWN, decode, encode

# go-plugin's handshake with Terraform: the cookie a plugin must see in its environment,
# the versions of go-plugin's own protocol and of the provider protocol it answers with.
MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"
CORE_PROTOCOL_VERSION = 1
PROVIDER_PROTOCOL_VERSION = 5

Block = dict[str, Any]  # a block of `terraform providers schema -json`
Path_ = tuple[str | int, ...]  # an attribute path: names and element indexes


@dataclass(frozen=True)
class ProviderSchema:
    provider: Block
    resources: dict[str, Block]
    data_sources: dict[str, Block]

    @classmethod
    def load(cls, path: Path) -> ProviderSchema:
        with gzip.open(path) as handle:
            document = json.load(handle)
        (schema,) = document["provider_schemas"].values()
        return cls(
            provider=schema["provider"],
            resources=schema["resource_schemas"],
            data_sources=schema["data_source_schemas"],
        )


# ------------------------------------------------------------------ schema over the wire


def block_message(block: Block) -> Any:
    message = tfplugin5.message("Schema_Block")()
    for name, attribute in sorted(block.get("attributes", {}).items()):
        computed_only = attribute.get("computed", False) and not attribute.get("optional")
        message.attributes.add(
            name=name,
            type=json.dumps(attribute["type"]).encode(),
            required=attribute.get("required", False),
            optional=attribute.get("optional", False),
            # Optional arguments may be computed: the source of the schema cannot tell.
            computed=computed_only or attribute.get("optional", False),
            sensitive=attribute.get("sensitive", False),
        )
    for name, nested in sorted(block.get("block_types", {}).items()):
        message.block_types.add(
            type_name=name,
            block=block_message(nested["block"]),
            nesting=tfplugin5.NESTING[nested["nesting_mode"]],
            min_items=nested.get("min_items", 0),
            max_items=nested.get("max_items", 0),
        )
    return message


def schema_message(schema: dict[str, Any]) -> Any:
    return tfplugin5.message("Schema")(
        version=schema.get("version", 0), block=block_message(schema["block"])
    )


# ------------------------------------------------------------------ values against a block


def elements(nested: Block, value: Any) -> Iterator[tuple[str | int, Any]]:
    """(key, object) of each block of one nested block type in ``value``."""
    if value is None or value is UNKNOWN:
        return
    mode = nested["nesting_mode"]
    if mode in ("single", "group"):
        yield "", value
    elif mode == "map":
        yield from value.items()
    else:
        yield from enumerate(value)


def config_problems(block: Block, value: Any, path: Path_ = ()) -> list[tuple[str, str, Path_]]:
    """What Terraform's own checks leave to the provider: null required arguments and
    values for computed-only attributes."""
    if value is None or value is UNKNOWN:
        return []
    problems = []
    for name, attribute in block.get("attributes", {}).items():
        given = value.get(name)
        if attribute.get("required") and given is None:
            problems.append(
                (
                    "Missing required argument",
                    f'The argument "{name}" is required, but it is null.',
                    (*path, name),
                )
            )
        computed_only = attribute.get("computed") and not attribute.get("optional")
        if computed_only and given is not None:
            problems.append(
                (
                    "Value for unconfigurable attribute",
                    f'Can\'t configure a value for "{name}": its value is decided by the provider.',
                    (*path, name),
                )
            )
    for name, nested in block.get("block_types", {}).items():
        for key, element in elements(nested, value.get(name)):
            step: Path_ = (name,) if key == "" else (name, key)
            problems += config_problems(nested["block"], element, (*path, *step))
    return problems


def fill_computed(block: Block, value: Any, fill: Callable[[str, Any], Any]) -> Any:
    """``value`` with every null attribute the provider computes set to
    ``fill(name, type)``, in nested blocks too."""
    if value is None or value is UNKNOWN:
        return value
    filled = dict(value)
    for name, attribute in block.get("attributes", {}).items():
        if filled.get(name) is None and not attribute.get("required"):
            filled[name] = fill(name, attribute["type"])
    for name, nested in block.get("block_types", {}).items():
        filled[name] = map_blocks(
            nested, filled.get(name), lambda inner, element: fill_computed(inner, element, fill)
        )
    return filled


def with_unknowns(block: Block, value: Any) -> Any:
    """``value`` with every null attribute the provider computes made unknown."""
    return fill_computed(block, value, lambda _name, _type: UNKNOWN)


def placeholder(name: str, cty_type: Any) -> Any:
    """A value of ``cty_type`` that reads as made up."""
    if cty_type == "string":
        return f"standin-{name.replace('_', '-')}"
    if cty_type == "number":
        return 0
    if cty_type == "bool":
        return False
    if isinstance(cty_type, list) and cty_type[0] in ("list", "set"):
        return []
    if isinstance(cty_type, list) and cty_type[0] == "map":
        return {}
    if isinstance(cty_type, list) and cty_type[0] == "object":
        return {key: placeholder(key, value) for key, value in cty_type[1].items()}
    return None


def with_placeholders(block: Block, value: Any) -> Any:
    """``value`` with every null attribute the provider computes given a placeholder."""
    return fill_computed(block, value, placeholder)


def map_blocks(nested: Block, value: Any, change: Callable[[Block, Any], Any]) -> Any:
    if value is None or value is UNKNOWN:
        return value
    mode = nested["nesting_mode"]
    if mode in ("single", "group"):
        return change(nested["block"], value)
    if mode == "map":
        return {key: change(nested["block"], item) for key, item in value.items()}
    return [change(nested["block"], item) for item in value]


# ------------------------------------------------------------------ the RPCs


def diagnostics(problems: list[tuple[str, str, Path_]]) -> list[Any]:
    found = []
    for summary, detail, path in problems:
        diagnostic = tfplugin5.message("Diagnostic")(
            severity=tfplugin5.SEVERITY_ERROR, summary=summary, detail=detail
        )
        for step in path:
            if isinstance(step, int):
                diagnostic.attribute.steps.add(element_key_int=step)
            else:
                diagnostic.attribute.steps.add(attribute_name=step)
        found.append(diagnostic)
    return found


def unknown_type(kind: str, type_name: str) -> list[Any]:
    return diagnostics(
        [(f"Unknown {kind} type", f"{type_name} is not in the stand-in's schema.", ())]
    )


class StandinProvider:
    """The provider protocol's handlers, each (request, context) -> response."""

    def __init__(self, schema: ProviderSchema, shutdown: threading.Event) -> None:
        self.schema = schema
        self.shutdown = shutdown

    def dynamic(self, value: Any) -> Any:
        return tfplugin5.message("DynamicValue")(msgpack=encode(value))

    def GetMetadata(self, request: Any, context: Any) -> Any:
        response = tfplugin5.message("GetMetadata_Response")()
        response.server_capabilities.get_provider_schema_optional = True
        for name in self.schema.resources:
            response.resources.add(type_name=name)
        for name in self.schema.data_sources:
            response.data_sources.add(type_name=name)
        return response

    def GetSchema(self, request: Any, context: Any) -> Any:
        response = tfplugin5.message("GetProviderSchema_Response")(
            provider=schema_message(self.schema.provider)
        )
        response.server_capabilities.get_provider_schema_optional = True
        for name, schema in self.schema.resources.items():
            response.resource_schemas.add(key=name, value=schema_message(schema))
        for name, schema in self.schema.data_sources.items():
            response.data_source_schemas.add(key=name, value=schema_message(schema))
        return response

    def PrepareProviderConfig(self, request: Any, context: Any) -> Any:
        config = decode(request.config.msgpack)
        return tfplugin5.message("PrepareProviderConfig_Response")(
            prepared_config=self.dynamic(config),
            diagnostics=diagnostics(config_problems(self.schema.provider["block"], config)),
        )

    def Configure(self, request: Any, context: Any) -> Any:
        return tfplugin5.message("Configure_Response")()

    def ValidateResourceTypeConfig(self, request: Any, context: Any) -> Any:
        return self._validate(self.schema.resources, "resource", request)

    def ValidateDataSourceConfig(self, request: Any, context: Any) -> Any:
        return self._validate(self.schema.data_sources, "data source", request)

    def _validate(self, schemas: dict[str, Block], kind: str, request: Any) -> Any:
        response = tfplugin5.message("ValidateConfig_Response")()
        schema = schemas.get(request.type_name)
        if schema is None:
            response.diagnostics.extend(unknown_type(kind, request.type_name))
            return response
        config = decode(request.config.msgpack)
        response.diagnostics.extend(diagnostics(config_problems(schema["block"], config)))
        return response

    def UpgradeResourceState(self, request: Any, context: Any) -> Any:
        # The state was written with this schema: it needs no upgrade, only re-encoding.
        state = json.loads(request.raw_state.json) if request.raw_state.json else None
        return tfplugin5.message("UpgradeResourceState_Response")(
            upgraded_state=self.dynamic(state)
        )

    def ReadResource(self, request: Any, context: Any) -> Any:
        # Nothing exists anywhere: what the state says is what there is.
        return tfplugin5.message("ReadResource_Response")(
            new_state=request.current_state, private=request.private
        )

    def PlanResourceChange(self, request: Any, context: Any) -> Any:
        response = tfplugin5.message("PlanResourceChange_Response")()
        schema = self.schema.resources.get(request.type_name)
        if schema is None:
            response.diagnostics.extend(unknown_type("resource", request.type_name))
            return response
        proposed = decode(request.proposed_new_state.msgpack)
        prior = decode(request.prior_state.msgpack)
        config = decode(request.config.msgpack)
        response.diagnostics.extend(diagnostics(config_problems(schema["block"], config)))
        # A new object: whatever the provider computes is known only after apply. An
        # existing one keeps its computed values (Terraform proposed them from the state).
        planned = proposed if prior is not None else with_unknowns(schema["block"], proposed)
        response.planned_state.msgpack = encode(planned)
        response.planned_private = request.prior_private
        return response

    def ReadDataSource(self, request: Any, context: Any) -> Any:
        response = tfplugin5.message("ReadDataSource_Response")()
        schema = self.schema.data_sources.get(request.type_name)
        if schema is None:
            response.diagnostics.extend(unknown_type("data source", request.type_name))
            return response
        config = decode(request.config.msgpack)
        response.state.msgpack = encode(with_placeholders(schema["block"], config))
        return response

    def Stop(self, request: Any, context: Any) -> Any:
        return tfplugin5.message("Stop_Response")()

    def Shutdown(self, request: Any, context: Any) -> Any:
        self.shutdown.set()
        return tfplugin5.message("Empty")()


def handlers(provider: StandinProvider) -> list[grpc.GenericRpcHandler]:
    services = []
    for service, methods in (
        (tfplugin5.PROVIDER_SERVICE, tfplugin5.PROVIDER_METHODS),
        (tfplugin5.CONTROLLER_SERVICE, tfplugin5.CONTROLLER_METHODS),
    ):
        rpc_handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                getattr(provider, name),
                request_deserializer=tfplugin5.message(request).FromString,
                response_serializer=tfplugin5.message(response).SerializeToString,
            )
            for name, (request, response) in methods.items()
        }
        services.append(grpc.method_handlers_generic_handler(service, rpc_handlers))
    return services


# ------------------------------------------------------------------ go-plugin


def server_certificate() -> tuple[bytes, bytes, bytes]:
    """(key PEM, certificate PEM, certificate DER) for go-plugin's automatic mutual TLS:
    self-signed for "localhost", as go-plugin's own plugins make theirs."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        key_pem,
        certificate.public_bytes(serialization.Encoding.PEM),
        certificate.public_bytes(serialization.Encoding.DER),
    )


def tls_context(directory: Path, client_certificate: str) -> tuple[ssl.SSLContext, str]:
    """The server side of go-plugin's automatic mutual TLS, and the certificate field of
    the handshake line (the raw certificate, base64 without padding: one line).

    Python's ssl (OpenSSL) in front of the gRPC server, not grpcio's own TLS: go-plugin's
    client key is ECDSA P-521, a signature the BoringSSL inside grpcio does not offer, so
    Terraform never presents its certificate to it (PEER_DID_NOT_RETURN_A_CERTIFICATE)."""
    key_pem, cert_pem, cert_der = server_certificate()
    key_file, cert_file = directory / "server.key", directory / "server.crt"
    key_file.touch(mode=0o600)
    key_file.write_bytes(key_pem)
    cert_file.write_bytes(cert_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED  # only the Terraform that started us
    context.load_verify_locations(cadata=client_certificate)
    context.set_alpn_protocols(["h2"])  # gRPC clients insist on it
    return context, base64.b64encode(cert_der).decode().rstrip("=")


async def relay(backend: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One TLS connection from Terraform, passed on to the gRPC server in plain text."""
    try:
        backend_reader, backend_writer = await asyncio.open_unix_connection(backend)
    except OSError:
        writer.close()
        return

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(1 << 16):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            sink.close()

    await asyncio.gather(pipe(reader, backend_writer), pipe(backend_reader, writer))


async def announce_and_wait(
    backend: str, directory: Path, shutdown: threading.Event, client_certificate: str
) -> None:
    """Print go-plugin's handshake line, serve until Terraform shuts us down or is gone
    without saying (then nobody else would stop us)."""
    parent = os.getppid()
    address, server_cert, front = backend, "", None
    if client_certificate:
        context, server_cert = tls_context(directory, client_certificate)
        address = str(directory / "plugin.sock")
        front = await asyncio.start_unix_server(
            lambda r, w: relay(backend, r, w), path=address, ssl=context
        )
    sys.stdout.write(
        f"{CORE_PROTOCOL_VERSION}|{PROVIDER_PROTOCOL_VERSION}|unix|{address}|grpc|{server_cert}\n"
    )
    sys.stdout.flush()
    while not shutdown.is_set() and os.getppid() == parent:
        await asyncio.sleep(0.2)
    if front is not None:
        front.close()


def serve(schema_path: Path) -> int:
    """Run as a plugin until Terraform shuts it down (or goes away)."""
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        sys.stderr.write("This is a Terraform provider plugin: Terraform starts it.\n")
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Terraform handles Ctrl-C and tells us
    shutdown = threading.Event()
    provider = StandinProvider(ProviderSchema.load(schema_path), shutdown)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )
    server.add_generic_rpc_handlers(handlers(provider))
    directory = Path(tempfile.mkdtemp(prefix="tf-standin-"))  # 0700: ours alone
    backend = str(directory / "grpc.sock")
    server.add_insecure_port(f"unix:{backend}")
    server.start()
    try:
        asyncio.run(
            announce_and_wait(
                backend, directory, shutdown, os.environ.get("PLUGIN_CLIENT_CERT", "")
            )
        )
    finally:
        server.stop(grace=0.5).wait()
        shutil.rmtree(directory, ignore_errors=True)
    return 0
