"""The administration commands on a temporary data directory: sentences, not tracebacks; exit 2 on bad
input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hotline.cli import main
from hotline.tenancy.config_document import parse_document
from tests.tenancy.test_config_document import YAML_DOCUMENT

HOTLINE = Path(sys.executable).parent / "hotline"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def _no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # The data directory alone decides where these tests write.
    monkeypatch.delenv("HOTLINE_DATABASE_URL", raising=False)


def test_tenant_config_and_number_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert run(capsys, "migrate", "--data-dir", data)[0] == 0

    code, out, _err = run(
        capsys,
        "tenant",
        "create",
        "acme",
        "--name",
        "Acme",
        "--sip-domain",
        "pbx.acme.cn",
        "--data-dir",
        data,
    )
    assert code == 0 and "created tenant acme" in out and "pbx.acme.cn" in out
    code, _out, err = run(capsys, "tenant", "create", "acme", "--name", "Acme again", "--data-dir", data)
    assert code == 2 and "already exists" in err
    code, _out, err = run(
        capsys, "tenant", "create", "bad", "--name", "Bad", "--sip-domain", "no domain!", "--data-dir", data
    )
    assert code == 2 and "SIP domain 'no domain!'" in err
    code, _out, err = run(capsys, "config", "export", "--tenant", "bad", "--data-dir", data)
    assert code == 2 and "does not exist" in err  # nothing was created

    source = tmp_path / "acme.yaml"
    source.write_text(YAML_DOCUMENT.replace("Acme.Example.com", "pbx.acme.cn"), encoding="utf-8")
    code, out, _err = run(capsys, "config", "import", str(source), "--tenant", "acme", "--data-dir", data)
    assert code == 0 and "imported" in out and "main v1" in out

    exported = tmp_path / "out.yaml"
    code, out, _err = run(
        capsys, "config", "export", "--tenant", "acme", "--output", str(exported), "--data-dir", data
    )
    assert code == 0 and str(exported) in out
    from_file = parse_document(exported.read_bytes())
    assert from_file["settings"] == {"sip_domain": "pbx.acme.cn"}
    assert {extension["number"] for extension in from_file["extensions"]} == {"1001", "1002"}
    code, out, _err = run(capsys, "config", "export", "--tenant", "acme", "--data-dir", data)
    assert code == 0 and parse_document(out) == from_file
    as_json = tmp_path / "out.json"
    assert (
        run(capsys, "config", "export", "--tenant", "acme", "--output", str(as_json), "--data-dir", data)[0]
        == 0
    )
    assert json.loads(as_json.read_text(encoding="utf-8")) == from_file

    # Importing the export changes nothing.
    code, out, _err = run(capsys, "config", "import", str(exported), "--tenant", "acme", "--data-dir", data)
    assert code == 0 and "0 change(s)" in out

    code, out, _err = run(
        capsys,
        "number",
        "assign",
        "021-5550-1234",
        "--tenant",
        "acme",
        "--target",
        "flow:main",
        "--data-dir",
        data,
    )
    assert code == 0 and "+862155501234" in out and "flow:main" in out
    code, _out, err = run(
        capsys, "number", "assign", "4100", "--tenant", "acme", "--target", "flow:mian", "--data-dir", data
    )
    assert code == 2 and "has no flow 'mian'" in err
    code, _out, err = run(
        capsys, "number", "assign", "4100", "--tenant", "acme", "--target", "fax", "--data-dir", data
    )
    assert code == 2 and "target 'fax'" in err

    assert run(capsys, "tenant", "create", "bolt", "--name", "Bolt", "--data-dir", data)[0] == 0
    code, _out, err = run(
        capsys, "number", "assign", "4001", "--tenant", "bolt", "--target", "echo", "--data-dir", data
    )
    assert code == 2 and "another tenant" in err
    code, _out, err = run(capsys, "config", "export", "--tenant", "ghost", "--data-dir", data)
    assert code == 2 and "tenant 'ghost' does not exist" in err


def test_an_invalid_configuration_is_refused_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert run(capsys, "tenant", "create", "acme", "--name", "Acme", "--data-dir", data)[0] == 0
    good = tmp_path / "good.yaml"
    good.write_text(YAML_DOCUMENT, encoding="utf-8")
    assert run(capsys, "config", "import", str(good), "--tenant", "acme", "--data-dir", data)[0] == 0
    before = run(capsys, "config", "export", "--tenant", "acme", "--data-dir", data)[1]

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        YAML_DOCUMENT.replace("options: {1: sales", "options: {1: salse").replace(
            "queues: [sales, support], extension: 1001", "queues: [sales, billing], extension: 1001"
        ),
        encoding="utf-8",
    )
    code, out, err = run(capsys, "config", "import", str(bad), "--tenant", "acme", "--data-dir", data)
    assert code == 2 and out == ""
    assert "nothing changed" in err and "3 problems" in err
    assert "flows[main].nodes[sales]: no path from the entry node leads here" in err
    assert "flows[main].nodes[menu].options.1: exit goes to missing node 'salse'" in err
    assert "agents[8001].queues: no queue 'billing'" in err
    assert run(capsys, "config", "export", "--tenant", "acme", "--data-dir", data)[1] == before

    code, _out, err = run(
        capsys, "config", "import", str(tmp_path / "missing.yaml"), "--tenant", "acme", "--data-dir", data
    )
    assert code == 2 and "cannot read" in err


def test_bad_yaml_file_exits_2_with_a_sentence(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = subprocess.run(
        [str(HOTLINE), "tenant", "create", "acme", "--name", "Acme", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "extensions:\n  - {number: 1001, password: abc12345x\n  - {number: 1002}\n", encoding="utf-8"
    )
    result = subprocess.run(
        [str(HOTLINE), "config", "import", str(broken), "--tenant", "acme", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"hotline: {broken}: not valid YAML at line 3")
