"""Validates an SBOM with its format's own project tools, used by attest/tests/interop_sbom.rs.

    sbom_validate.py spdx FILE        spdx-tools: parse, then validate as SPDX 2.3
                                      (what `pyspdxtools -i FILE` does)
    sbom_validate.py cyclonedx FILE   cyclonedx-python-lib: JsonStrictValidator, schema 1.6

Network access is switched off before either tool is imported: a validator that tried to
fetch a schema or a license list would fail here instead of quietly depending on the network.

Exit codes: 0 valid, 1 invalid (the reasons on stdout), 2 usage, 3 a tool is missing,
4 anything else went wrong (a crash must not pass for a refusal).
"""

import socket
import sys

EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_MODULE_MISSING = 3
EXIT_CRASH = 4


def _no_network(*_args, **_kwargs):
    raise OSError("sbom_validate.py: network access is disabled; the validator must work offline")


socket.socket.connect = _no_network
socket.socket.connect_ex = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network


def validate_spdx(path):
    try:
        from spdx_tools.spdx.parser.error import SPDXParsingError
        from spdx_tools.spdx.parser.parse_anything import parse_file
        from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    except ImportError as e:
        print(f"spdx-tools is missing: {e}", file=sys.stderr)
        return EXIT_MODULE_MISSING
    try:
        document = parse_file(path)
    except SPDXParsingError as e:
        for message in e.get_messages():
            print(f"spdx-tools: {message}")
        return EXIT_INVALID
    messages = validate_full_spdx_document(document, "SPDX-2.3")
    for m in messages:
        print(f"spdx-tools: {m.validation_message}")
    if messages:
        return EXIT_INVALID
    print(f"spdx-tools: {path} is a valid SPDX-2.3 document")
    return 0


def validate_cyclonedx(path):
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
    except ImportError as e:
        print(f"cyclonedx-python-lib is missing: {e}", file=sys.stderr)
        return EXIT_MODULE_MISSING
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    except Exception as e:  # MissingOptionalDependencyException: no jsonschema
        print(f"cyclonedx-python-lib cannot validate JSON: {e}", file=sys.stderr)
        return EXIT_MODULE_MISSING
    if errors is not None:
        for e in errors:
            # e.data is a jsonschema ValidationError; its full text repeats the whole schema.
            where = "/".join(str(p) for p in getattr(e.data, "absolute_path", []))
            print(f"cyclonedx: /{where}: {getattr(e.data, 'message', e)}")
        return EXIT_INVALID
    print(f"cyclonedx: {path} is a valid CycloneDX 1.6 BOM")
    return 0


def main(argv):
    if len(argv) != 3 or argv[1] not in ("spdx", "cyclonedx"):
        print(__doc__, file=sys.stderr)
        return EXIT_USAGE
    return validate_spdx(argv[2]) if argv[1] == "spdx" else validate_cyclonedx(argv[2])


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except Exception:  # noqa: BLE001 - reported, and never mistaken for "invalid"
        import traceback

        traceback.print_exc()
        code = EXIT_CRASH
    sys.exit(code)
