"""Generate switchboard/amqp/spec.py from the AMQP 1.0 specification's XML.

    python tools/gen_spec.py [SPEC_DIR] > switchboard/amqp/spec.py

SPEC_DIR defaults to ../shared/spec/amqp-1.0 beside the repository.  The output is
committed, so the package never needs the XML at run time; tests/amqp/test_spec.py
regenerates it and fails if the committed file is stale.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

FILES = ("types", "transport", "messaging", "security", "transactions")
NS = "{http://www.amqp.org/schema/amqp.xsd}"
PRIMITIVES = {
    "null", "boolean", "ubyte", "ushort", "uint", "ulong", "byte", "short", "int", "long",
    "float", "double", "decimal32", "decimal64", "decimal128", "char", "timestamp", "uuid",
    "binary", "string", "symbol", "list", "map", "array",
}

# The types.py class of each integer type a default can have.
TYPE_CLASSES = {"ubyte": "UByte", "ushort": "UShort", "uint": "UInt", "ulong": "ULong"}


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def constant_name(name: str) -> str:
    return name.replace("-", "_").upper()


def load(spec_dir: Path) -> dict[str, ET.Element]:
    types: dict[str, ET.Element] = {}
    for stem in FILES:
        root = ET.parse(spec_dir / f"{stem}.bare.xml").getroot()
        for element in root.iter(NS + "type"):
            types[element.get("name")] = element
    return types


def resolve(types: dict[str, ET.Element], name: str) -> str:
    """The type that encodes ``name``: a primitive, "fields", "*", or a composite's name."""
    while name not in PRIMITIVES and name not in ("*", "fields"):
        element = types[name]
        if element.get("class") == "composite":
            return name
        name = element.get("source")
    return name


def literal(types: dict[str, ET.Element], field_type: str, default: str | None) -> str:
    if default is None:
        return "None"
    element = types.get(field_type)
    if element is not None:
        for choice in element.iter(NS + "choice"):
            if choice.get("name") == default:
                default = choice.get("value")
                break
    base = resolve(types, field_type)
    if base == "boolean":
        return "True" if default == "true" else "False"
    if base == "symbol":
        return f"Symbol({default!r})"
    # Typed, so that a default filled in on decoding is the value the wire would carry.
    return f"{TYPE_CLASSES[base]}({int(default)})"


def choice_literal(base: str, value: str) -> str:
    if base == "boolean":
        return "True" if value == "true" else "False"
    if base == "symbol":
        return f"Symbol({value!r})"
    return str(int(value))


def generate(spec_dir: Path) -> str:
    types = load(spec_dir)
    out = [
        '"""AMQP 1.0 composite types and restricted-type choices, generated from the spec XML.',
        "",
        "Do not edit: run ``python tools/gen_spec.py > switchboard/amqp/spec.py``.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any",
        "",
        "from .composite import Composite, Field",
        "from .types import Symbol, UByte, UInt, ULong, UShort",
        "",
    ]
    names: list[str] = []
    for name, element in types.items():
        choices = list(element.iter(NS + "choice"))
        if element.get("class") != "restricted" or not choices:
            continue
        base = resolve(types, element.get("source"))
        cls = class_name(name)
        names.append(cls)
        out += ["", f"class {cls}:", f'    """Choices of the restricted type ``{name}`` ({base})."""', ""]
        for choice in choices:
            out.append(f"    {constant_name(choice.get('name'))} = {choice_literal(base, choice.get('value'))}")
        out.append("")

    descriptors: list[tuple[str, str, int]] = []
    for name, element in types.items():
        descriptor = element.find(NS + "descriptor")
        if descriptor is None:
            continue
        code = int(descriptor.get("code").split(":")[1], 16)
        descriptors.append((name, descriptor.get("name"), code))
        if element.get("class") != "composite":
            continue
        cls = class_name(name)
        names.append(cls)
        fields = list(element.iter(NS + "field"))
        attrs = [f.get("name").replace("-", "_") for f in fields]
        out += ["", f"class {cls}(Composite):", f'    """``{descriptor.get("name")}``."""', ""]
        out.append(f"    __slots__ = ({''.join(repr(a) + ', ' for a in attrs)})")
        out.append(f"    DESCRIPTOR = {code:#04x}")
        out.append(f"    NAME = Symbol({descriptor.get('name')!r})")
        provides = tuple(p.strip() for p in (element.get("provides") or "").split(",") if p.strip())
        out.append(f"    TYPE_NAME = {name!r}")
        out.append(f"    PROVIDES = {provides!r}")
        out.append("    FIELDS = (")
        for field, attr in zip(fields, attrs):
            base = resolve(types, field.get("type"))
            args = [repr(attr), repr(base)]
            if field.get("mandatory") == "true":
                args.append("mandatory=True")
            if field.get("multiple") == "true":
                args.append("multiple=True")
            if field.get("requires") is not None:
                args.append(f"requires={field.get('requires')!r}")
            default = literal(types, field.get("type"), field.get("default"))
            if default != "None":
                args.append(f"default={default}")
            out.append(f"        Field({', '.join(args)}),")
        out.append("    )")
        out.append("")
        if attrs:
            params = ", ".join(
                f"{attr}: Any = {literal(types, field.get('type'), field.get('default'))}"
                for field, attr in zip(fields, attrs)
            )
            out.append(f"    def __init__(self, {params}) -> None:")
            for attr in attrs:
                out.append(f"        self.{attr} = {attr}")
            out.append("")

    out += ["", "class Descriptor:", '    """Descriptor codes of every described type in the spec."""', ""]
    for name, _, code in descriptors:
        out.append(f"    {constant_name(name)} = {code:#04x}")
    out.append("")
    out += ["", "__all__ = ["]
    for name in sorted(names + ["Descriptor"]):
        out.append(f"    {name!r},")
    out.append("]")
    text = "\n".join(out) + "\n"
    # Import only the typed-int wrappers that some default actually uses.
    used = [n for n in ("UByte", "UInt", "ULong", "UShort") if f"{n}(" in text]
    return text.replace(
        "from .types import Symbol, UByte, UInt, ULong, UShort",
        "from .types import " + ", ".join(["Symbol", *used]),
    )


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "spec" / "amqp-1.0"
    spec_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    sys.stdout.write(generate(spec_dir))


if __name__ == "__main__":
    main()
