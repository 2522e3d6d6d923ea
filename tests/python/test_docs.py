"""The documentation agrees with the code it describes.

- docs/configuration.md documents exactly the keys of `clew.yaml` that `crates/clew/src/config.rs`
  deserializes (serde field names and renames, `#[serde(skip)]` fields excluded), walking the
  configuration structs from `Config` down. Sections whose type lives in another crate (TLS, auth,
  encryption, S3, limits, processors…) are one key here and have their own page.
- docs/SUMMARY.md lists every page of docs/, so no page is left out of the site.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG_RS = REPO / "crates" / "clew" / "src" / "config.rs"
REFERENCE = REPO / "docs" / "configuration.md"

_STRUCT = re.compile(r"pub struct (\w+)\s*\{(.*?)\n\}", re.S)
_FIELD = re.compile(r"^\s*pub (\w+)\s*:\s*(.+?),\s*$")
_ATTR = re.compile(r"^\s*#\[serde\((.*)\)\]\s*$")


def _inner_type(ty: str) -> str:
    """`Option<Box<X>>` → `X`; `a::b::X` → `X`."""
    ty = ty.strip()
    while True:
        m = re.fullmatch(r"(?:Option|Box)<(.+)>", ty)
        if not m:
            break
        ty = m.group(1).strip()
    return ty.split("::")[-1]


def parse_structs(source: str) -> dict[str, list[tuple[str, str]]]:
    """Every `pub struct` with `Deserialize` in its derive: name → [(yaml key, field type)]."""
    structs: dict[str, list[tuple[str, str]]] = {}
    for m in _STRUCT.finditer(source):
        # The derive list is in the attributes right above the struct.
        head = source[: m.start()].rsplit("\n\n", 1)[-1]
        if "Deserialize" not in head:
            continue
        fields: list[tuple[str, str]] = []
        attrs: list[str] = []
        for line in m.group(2).splitlines():
            if line.strip().startswith("///") or not line.strip():
                continue
            a = _ATTR.match(line)
            if a:
                attrs.append(a.group(1))
                continue
            f = _FIELD.match(line)
            if f:
                name, ty = f.groups()
                serde = ", ".join(attrs)
                attrs = []
                # `skip`: not a key; `flatten`: its keys are the parent's (`receivers.kafka/NAME`).
                if re.search(r"\b(skip|flatten)\b", serde):
                    continue
                rename = re.search(r'rename\s*=\s*"([^"]+)"', serde)
                fields.append((rename.group(1) if rename else name, ty))
            else:
                attrs = []
        structs[m.group(1)] = fields
    return structs


def config_keys(source: str) -> set[str]:
    structs = parse_structs(source)
    assert "Config" in structs, "no `pub struct Config` with Deserialize in config.rs"
    keys: set[str] = set()

    def walk(struct: str, prefix: str) -> None:
        for key, ty in structs[struct]:
            path = f"{prefix}{key}"
            keys.add(path)
            inner = _inner_type(ty)
            if inner in structs:
                walk(inner, f"{path}.")

    walk("Config", "")
    return keys


def documented_keys(text: str) -> set[str]:
    """The first cell of every table row of the reference, when it is one backticked key."""
    keys = set()
    for line in text.splitlines():
        m = re.match(r"^\|\s*`([a-z0-9_.]+)`\s*\|", line)
        if m:
            keys.add(m.group(1))
    return keys


def test_parser_sees_the_known_structs():
    # Guards the parser itself: were it to find nothing, the comparison below would be vacuous.
    structs = parse_structs(CONFIG_RS.read_text())
    for name in ("Config", "Receivers", "Storage", "BlockSettings", "Query", "Service"):
        assert name in structs, f"struct {name} not parsed from config.rs"
    assert ("max_head_spans", "usize") in structs["Storage"]
    assert all(key != "processor_configs" for key, _ in structs["Config"]), "#[serde(skip)] field kept"


def test_configuration_reference_matches_config_rs():
    # `target:` and `cluster:` are defined next to the roles (target.rs), the rest in config.rs.
    code = config_keys(CONFIG_RS.read_text() + "\n" + (CONFIG_RS.parent / "target.rs").read_text())
    doc = documented_keys(REFERENCE.read_text())
    assert len(code) > 40 and {"storage.block.max_spans", "receivers.otlp.protocols.grpc.endpoint"} <= code
    undocumented = sorted(code - doc)
    unknown = sorted(doc - code)
    assert not undocumented, f"keys in config.rs missing from docs/configuration.md: {undocumented}"
    assert not unknown, f"keys in docs/configuration.md that config.rs does not accept: {unknown}"


def test_summary_lists_every_page():
    docs = REPO / "docs"
    summary = (docs / "SUMMARY.md").read_text()
    linked = {Path(p).as_posix() for p in re.findall(r"\]\(([^)#]+\.md)\)", summary)}
    pages = {p.relative_to(docs).as_posix() for p in docs.rglob("*.md") if p.name != "SUMMARY.md"}
    missing = sorted(pages - linked)
    assert not missing, f"pages of docs/ not in docs/SUMMARY.md (not on the site): {missing}"


# Files in examples/config/ that are not server configurations: the sidecar's config (checked with
# `clew proxy check-config`), files a configuration names (overrides, strategies) and folders.
_PROXY_CONFIGS = {"proxy.yaml"}


def test_example_configs_are_valid():
    import subprocess

    from clew_helpers import clew_bin

    examples = REPO / "examples" / "config"
    checked = []
    # examples/scale-out: one configuration per role (`target:`), checked the same way.
    for path in sorted(examples.glob("*.y*ml")) + sorted((REPO / "examples" / "scale-out").glob("*.y*ml")):
        text = path.read_text()
        if path.name in _PROXY_CONFIGS:
            cmd = [str(clew_bin()), "proxy", "--config", str(path), "check-config"]
        elif not re.search(r"^(receivers|storage|service|processors|exporters|query|limits|extensions):",
                           text, re.M):
            continue  # a file another configuration names (per-tenant overrides)
        else:
            cmd = [str(clew_bin()), "config", "check", str(path)]
        # The secrets the examples read from the environment (redaction.yaml), as a deployment sets them.
        env = dict(os.environ, CLEW_BAGGAGE_SECRET="docs-test-secret-0123456789abcdef", CLEW_REDACTION_KEY="docs-test-key-0123456789abcdef",
                   RUST_BACKTRACE="0")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=path.parent, env=env)
        assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout}{out.stderr}"
        checked.append(path.name)
    assert "clew.yaml" in checked and len(checked) >= 10, checked
    assert {"collector.yaml", "ingester.yaml", "querier.yaml", "compactor.yaml"} <= set(checked), checked
