"""One parser for JSON objects from outside (bundle/jsonobject.py): bounded, depth-safe, objects only, one error type."""

import ast
from pathlib import Path

import pytest

from bundle.errors import AirlockError, BundleError, JsonObjectError
from bundle.jsonobject import parse_array, parse_object
from bundle.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
DEEP = b"[" * 100000 + b"]" * 100000


@pytest.mark.parametrize(
    "data, reason",
    [
        (DEEP, "nests JSON arrays or objects too deeply"),
        (b'{"a":' * 50000 + b"1" + b"}" * 50000, "nests JSON arrays or objects too deeply"),
        (b"{", "is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (b"\xff\xfe{", "is not UTF-8 JSON"),
        (b"[]", "is a JSON array, not a JSON object"),
        (b'"text"', "is a JSON string, not a JSON object"),
        (b"null", "is a JSON null, not a JSON object"),
        (b"7", "is a JSON number or boolean, not a JSON object"),
        (b" " * (1 << 20) + b"{}", f"is {(1 << 20) + 2} bytes, more than the {1 << 20} it may be"),
    ],
)
def test_what_is_not_a_bounded_json_object_is_refused_in_one_line_naming_the_source(data, reason):
    with pytest.raises(JsonObjectError) as caught:
        parse_object(data, "https://registry.example/v2/x/manifests/y", 1 << 20)
    assert str(caught.value) == f"https://registry.example/v2/x/manifests/y: {reason}"
    assert isinstance(caught.value, AirlockError) and isinstance(caught.value, ValueError)
    assert (caught.value.where, caught.value.reason) == ("https://registry.example/v2/x/manifests/y", reason)


def test_objects_and_arrays_parse():
    assert parse_object(b'{"a": [1, {"b": null}]}', "x", 100) == {"a": [1, {"b": None}]}
    assert parse_object('{"a": 1}', "x", 100) == {"a": 1}
    assert parse_array(b'["u1", "u2"]', "rekor", 100) == ["u1", "u2"]
    with pytest.raises(JsonObjectError, match="^rekor: is a JSON object, not a JSON array$"):
        parse_array(b"{}", "rekor", 100)
    with pytest.raises(JsonObjectError, match="^rekor: nests JSON arrays or objects too deeply$"):
        parse_array(DEEP, "rekor", 1 << 20)


def test_bundle_json_keeps_its_own_refusals_through_the_one_parser():
    with pytest.raises(BundleError, match="^bundle.json: nests JSON arrays or objects too deeply$"):
        Manifest.parse(DEEP)
    with pytest.raises(BundleError, match="^bundle.json: is a JSON array, not a JSON object$"):
        Manifest.parse(b"[1]")
    with pytest.raises(BundleError, match="has the key 'a' twice"):
        Manifest.parse(b'{"a": 1, "a": 2}')


def test_no_json_parse_outside_the_one_parser_catches_recursion_itself():
    """A RecursionError from json.loads is caught in bundle/jsonobject.py only; everyone else calls parse_object."""
    allowed = {
        "bundle/jsonobject.py",
        "bundle/apis.py",  # YAML: PyYAML's composer recurses too, and YAML is not JSON
        "builder/images.py",  # oras-py parses token answers itself (response.json()); we cannot hand it our parser
    }
    found = []
    for package in ("builder", "bundle", "installer", "airlock"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and node.id == "RecursionError" and relative not in allowed:
                    found.append(f"{relative}:{node.lineno}")
    assert found == []
