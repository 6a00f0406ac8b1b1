"""The part of Terraform's plugin protocol 5 the stand-in provider speaks, as protobuf
messages built at import time (no generated code, no protoc).

Terraform defines the protocol in ``docs/plugin-protocol/tfplugin5.*.proto`` of
hashicorp/terraform (MPL-2.0); Terraform 1.11 speaks 5.8. This module is written for
modelrail and holds only what the stand-in answers: the field numbers and types below
are the wire format of those messages. Nested messages of the original (``Schema.Block``)
are flat here (``Schema_Block``) and maps are written as repeated entries, which
protobuf encodes identically, so only the service and method names must match.

go-plugin's controller service (``plugin.GRPCController``) is here too: Terraform asks
it to shut the plugin down when it is done with it.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FieldType = descriptor_pb2.FieldDescriptorProto

# (field name, number, scalar type name or message name, repeated, oneof)
SCALARS = {
    "string": FieldType.TYPE_STRING,
    "bytes": FieldType.TYPE_BYTES,
    "bool": FieldType.TYPE_BOOL,
    "int64": FieldType.TYPE_INT64,
    "enum": FieldType.TYPE_ENUM,
}

# message -> fields: (name, number, type, label). Types that are not scalars name a
# message (or, prefixed "enum:", an enum) of this file.
MESSAGES: dict[str, list[tuple[str, int, str, str]]] = {
    "DynamicValue": [("msgpack", 1, "bytes", ""), ("json", 2, "bytes", "")],
    "AttributePath_Step": [
        ("attribute_name", 1, "string", "oneof"),
        ("element_key_string", 2, "string", "oneof"),
        ("element_key_int", 3, "int64", "oneof"),
    ],
    "AttributePath": [("steps", 1, "AttributePath_Step", "repeated")],
    "Diagnostic": [
        ("severity", 1, "enum:Diagnostic_Severity", ""),
        ("summary", 2, "string", ""),
        ("detail", 3, "string", ""),
        ("attribute", 4, "AttributePath", ""),
    ],
    "Schema_Block": [
        ("version", 1, "int64", ""),
        ("attributes", 2, "Schema_Attribute", "repeated"),
        ("block_types", 3, "Schema_NestedBlock", "repeated"),
        ("description", 4, "string", ""),
        ("deprecated", 6, "bool", ""),
    ],
    "Schema_Attribute": [
        ("name", 1, "string", ""),
        ("type", 2, "bytes", ""),
        ("description", 3, "string", ""),
        ("required", 4, "bool", ""),
        ("optional", 5, "bool", ""),
        ("computed", 6, "bool", ""),
        ("sensitive", 7, "bool", ""),
        ("deprecated", 9, "bool", ""),
    ],
    "Schema_NestedBlock": [
        ("type_name", 1, "string", ""),
        ("block", 2, "Schema_Block", ""),
        ("nesting", 3, "enum:Schema_NestedBlock_NestingMode", ""),
        ("min_items", 4, "int64", ""),
        ("max_items", 5, "int64", ""),
    ],
    "Schema": [("version", 1, "int64", ""), ("block", 2, "Schema_Block", "")],
    "ServerCapabilities": [
        ("plan_destroy", 1, "bool", ""),
        ("get_provider_schema_optional", 2, "bool", ""),
    ],
    "TypeName": [("type_name", 1, "string", "")],
    "GetMetadata_Request": [],
    "GetMetadata_Response": [
        ("server_capabilities", 1, "ServerCapabilities", ""),
        ("diagnostics", 2, "Diagnostic", "repeated"),
        ("data_sources", 3, "TypeName", "repeated"),
        ("resources", 4, "TypeName", "repeated"),
    ],
    "SchemaEntry": [("key", 1, "string", ""), ("value", 2, "Schema", "")],
    "GetProviderSchema_Request": [],
    "GetProviderSchema_Response": [
        ("provider", 1, "Schema", ""),
        ("resource_schemas", 2, "SchemaEntry", "repeated"),
        ("data_source_schemas", 3, "SchemaEntry", "repeated"),
        ("diagnostics", 4, "Diagnostic", "repeated"),
        ("provider_meta", 5, "Schema", ""),
        ("server_capabilities", 6, "ServerCapabilities", ""),
    ],
    "PrepareProviderConfig_Request": [("config", 1, "DynamicValue", "")],
    "PrepareProviderConfig_Response": [
        ("prepared_config", 1, "DynamicValue", ""),
        ("diagnostics", 2, "Diagnostic", "repeated"),
    ],
    "RawState": [("json", 1, "bytes", "")],
    "UpgradeResourceState_Request": [
        ("type_name", 1, "string", ""),
        ("version", 2, "int64", ""),
        ("raw_state", 3, "RawState", ""),
    ],
    "UpgradeResourceState_Response": [
        ("upgraded_state", 1, "DynamicValue", ""),
        ("diagnostics", 2, "Diagnostic", "repeated"),
    ],
    "ValidateConfig_Request": [("type_name", 1, "string", ""), ("config", 2, "DynamicValue", "")],
    "ValidateConfig_Response": [("diagnostics", 1, "Diagnostic", "repeated")],
    "Configure_Request": [
        ("terraform_version", 1, "string", ""),
        ("config", 2, "DynamicValue", ""),
    ],
    "Configure_Response": [("diagnostics", 1, "Diagnostic", "repeated")],
    "ReadResource_Request": [
        ("type_name", 1, "string", ""),
        ("current_state", 2, "DynamicValue", ""),
        ("private", 3, "bytes", ""),
    ],
    "ReadResource_Response": [
        ("new_state", 1, "DynamicValue", ""),
        ("diagnostics", 2, "Diagnostic", "repeated"),
        ("private", 3, "bytes", ""),
    ],
    "PlanResourceChange_Request": [
        ("type_name", 1, "string", ""),
        ("prior_state", 2, "DynamicValue", ""),
        ("proposed_new_state", 3, "DynamicValue", ""),
        ("config", 4, "DynamicValue", ""),
        ("prior_private", 5, "bytes", ""),
    ],
    "PlanResourceChange_Response": [
        ("planned_state", 1, "DynamicValue", ""),
        ("requires_replace", 2, "AttributePath", "repeated"),
        ("planned_private", 3, "bytes", ""),
        ("diagnostics", 4, "Diagnostic", "repeated"),
    ],
    "ReadDataSource_Request": [("type_name", 1, "string", ""), ("config", 2, "DynamicValue", "")],
    "ReadDataSource_Response": [
        ("state", 1, "DynamicValue", ""),
        ("diagnostics", 2, "Diagnostic", "repeated"),
    ],
    "Stop_Request": [],
    "Stop_Response": [("Error", 1, "string", "")],
    "Empty": [],
}
ENUMS = {
    "Diagnostic_Severity": ["INVALID", "ERROR", "WARNING"],
    "Schema_NestedBlock_NestingMode": ["INVALID", "SINGLE", "LIST", "SET", "MAP", "GROUP"],
}

# rpc name -> (request, response), service by service.
PROVIDER_SERVICE = "tfplugin5.Provider"
PROVIDER_METHODS = {
    "GetMetadata": ("GetMetadata_Request", "GetMetadata_Response"),
    "GetSchema": ("GetProviderSchema_Request", "GetProviderSchema_Response"),
    "PrepareProviderConfig": ("PrepareProviderConfig_Request", "PrepareProviderConfig_Response"),
    "ValidateResourceTypeConfig": ("ValidateConfig_Request", "ValidateConfig_Response"),
    "ValidateDataSourceConfig": ("ValidateConfig_Request", "ValidateConfig_Response"),
    "UpgradeResourceState": ("UpgradeResourceState_Request", "UpgradeResourceState_Response"),
    "Configure": ("Configure_Request", "Configure_Response"),
    "ReadResource": ("ReadResource_Request", "ReadResource_Response"),
    "PlanResourceChange": ("PlanResourceChange_Request", "PlanResourceChange_Response"),
    "ReadDataSource": ("ReadDataSource_Request", "ReadDataSource_Response"),
    "Stop": ("Stop_Request", "Stop_Response"),
}
CONTROLLER_SERVICE = "plugin.GRPCController"
CONTROLLER_METHODS = {"Shutdown": ("Empty", "Empty")}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="modelrail_tfplugin5_subset.proto", package="tfplugin5", syntax="proto3"
    )
    for enum_name, values in ENUMS.items():
        enum = proto.enum_type.add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=f"{enum_name}_{value}", number=number)
    for message_name, fields in MESSAGES.items():
        message = proto.message_type.add(name=message_name)
        if any(label == "oneof" for *_, label in fields):
            message.oneof_decl.add(name="selector")
        for field_name, number, type_name, label in fields:
            field = message.field.add(name=field_name, number=number)
            field.label = (
                FieldType.LABEL_REPEATED if label == "repeated" else FieldType.LABEL_OPTIONAL
            )
            if label == "oneof":
                field.oneof_index = 0
            if type_name.startswith("enum:"):
                field.type = FieldType.TYPE_ENUM
                field.type_name = f".tfplugin5.{type_name.removeprefix('enum:')}"
            elif type_name in SCALARS:
                field.type = SCALARS[type_name]
            else:
                field.type = FieldType.TYPE_MESSAGE
                field.type_name = f".tfplugin5.{type_name}"
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def message(name: str) -> Any:
    """The message class ``name`` (a key of MESSAGES)."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"tfplugin5.{name}"))


SEVERITY_ERROR = 1
NESTING = {"single": 1, "list": 2, "set": 3, "map": 4, "group": 5}
