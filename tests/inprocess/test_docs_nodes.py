"""docs/nodes.md names every node the pack registers and every input and output socket of each, as the node
schemas declare them (the node list is `nodes.NODES`, the schemas come from ComfyUI's V3 `GET_SCHEMA`).

Each node has its own section, a `### <display name> (`<node id>`)` heading; inside it every input id and every
output id (and an output's display name where it differs) must appear in backticks, and nothing may be
documented as a socket of the node that it does not have (a table row's first cell).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NODES_DOC = Path(__file__).resolve().parents[2] / "docs" / "nodes.md"
HEADING = re.compile(r"^### (?P<title>.+?) \(`(?P<node_id>SearchPriors_\w+)`\)\s*$", re.MULTILINE)
ROW_SOCKET = re.compile(r"^\| `(?P<name>\w+)`", re.MULTILINE)


def sections() -> dict[str, tuple[str, str]]:
    """node id -> (heading title, the section's text up to the next node heading)."""
    text = NODES_DOC.read_text()
    found = list(HEADING.finditer(text))
    out = {}
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        assert m.group("node_id") not in out, f"docs/nodes.md documents {m.group('node_id')} twice"
        out[m.group("node_id")] = (m.group("title"), text[m.end():end])
    return out


def socket_names(schema) -> tuple[list[str], list[str]]:
    inputs = [i.id for i in schema.inputs]
    outputs = []
    for o in schema.outputs:
        outputs.append(o.id)
        if o.display_name and o.display_name != o.id:
            outputs.append(o.display_name)
    return inputs, outputs


@pytest.fixture(scope="module")
def schemas(pack_nodes):
    return {schema.node_id: schema for schema in (node.GET_SCHEMA() for node in pack_nodes.NODES)}


def test_every_node_has_one_section(schemas):
    documented = sections()
    assert sorted(documented) == sorted(schemas), (
        f"missing from docs/nodes.md: {sorted(set(schemas) - set(documented))}; "
        f"documented but not registered: {sorted(set(documented) - set(schemas))}")
    for node_id, (title, _) in documented.items():
        assert title == schemas[node_id].display_name, f"{node_id}: heading '{title}', display name " \
                                                       f"'{schemas[node_id].display_name}'"


def test_every_socket_is_documented(schemas):
    documented = sections()
    problems = []
    for node_id, schema in schemas.items():
        body = documented.get(node_id, ("", ""))[1]
        inputs, outputs = socket_names(schema)
        for name in inputs + outputs:
            if f"`{name}`" not in body:
                problems.append(f"{node_id}: socket `{name}` is not in its section")
        for row in ROW_SOCKET.finditer(body):
            if row.group("name") not in inputs + outputs:
                problems.append(f"{node_id}: the section's table has `{row.group('name')}`, which the node lacks")
    assert not problems, "docs/nodes.md is out of date with the node schemas:\n" + "\n".join(problems)
