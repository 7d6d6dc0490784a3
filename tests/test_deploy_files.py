"""The files that run relkd on a cluster (Dockerfile, Dockerfile.cuda, .dockerignore,
examples/slurm/, examples/kubernetes/) checked without Docker, SLURM or a cluster: the
Dockerfiles' instructions, what the build context holds, a wheel built from exactly what the
Dockerfiles copy, the sbatch script run with a stand-in ``relkd``, the manifests' kinds and
cross-references, and every ``relkd`` command line of these files parsed by relkd's own parser,
so the examples cannot drift from the command line."""
from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from relkd.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
SLURM = ROOT / "examples" / "slurm"
KUBE = ROOT / "examples" / "kubernetes"
SBATCH = SLURM / "workers.sbatch"


# ----------------------------------------------------------------------------------------
# A small Dockerfile parser and Docker's .dockerignore rules


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of every instruction: lines ending in a backslash continue, comment
    lines (also inside a continued instruction) and blank lines are dropped, as Docker does."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "the last instruction ends in a line continuation"
    return out


def dockerfile(name: str) -> list[tuple[str, str]]:
    return instructions((ROOT / name).read_text(encoding="utf-8"))


def arg_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for keyword, args in steps:
        if keyword == "ARG" and "=" in args:
            key, _, value = args.partition("=")
            out[key] = value.strip('"')
    return out


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], text)


def copies(steps: list[tuple[str, str]]) -> list[tuple[int, list[str], str]]:
    """(index of the instruction, sources, destination) of every COPY/ADD from the build context."""
    out = []
    for i, (keyword, args) in enumerate(steps):
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        if any(w.startswith("--from=") for w in words):
            continue  # from another stage, not the context
        words = [w for w in words if not w.startswith("--")]
        out.append((i, words[:-1], words[-1]))
    return out


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's pattern syntax (Go's filepath.Match plus ``**``), anchored at the context root."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c) if c != "[" else "[")
        if c == "[":
            j = pattern.index("]", i)
            out += pattern[i + 1:j].replace("!", "^", 1) + "]"
            i = j
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((keep, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern]] | None = None) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the build context: the last rule
    that matches the path or one of its parent folders decides."""
    rules = dockerignore_rules() if rules is None else rules
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    decision = False
    for keep, regex in rules:
        if any(regex.match(p) for p in prefixes):
            decision = not keep
    return decision


def context_files(source: str) -> list[str]:
    """The files of ``source`` (a file or folder of the repository) that reach the build context."""
    rules = dockerignore_rules()
    base = ROOT / source
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    rel = [p.relative_to(ROOT).as_posix() for p in files]
    return [r for r in rel if not ignored(r, rules)]


# ----------------------------------------------------------------------------------------
# relkd command lines


def parse_relkd(argv: list[str]):
    """relkd's own parser on a command line (without the leading ``relkd``); a flag or command
    that does not exist fails the test with relkd's message instead of exiting."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as err:
        pytest.fail(f"relkd does not accept {shlex.join(argv)!r} (exit {err.code})")


def relkd_argv(words: list[str]) -> list[str] | None:
    """The arguments after the ``relkd`` program (or ``.venv/bin/relkd``) in a shell command's words."""
    for i, w in enumerate(words):
        if w == "relkd" or w.endswith("/bin/relkd"):
            return words[i + 1:]
    return None


def fenced_commands(markdown: str) -> list[str]:
    """Every command of the ```bash blocks, continuation lines joined."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.DOTALL):
        out += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return out


# ----------------------------------------------------------------------------------------
# Dockerfiles


def test_the_parser_joins_continuations_and_drops_comments():
    steps = instructions("ARG A=1\nFROM x:${A}\n# a comment\nRUN a \\\n  # inside\n    && b\nCMD [\"--help\"]\n")
    assert steps == [("ARG", "A=1"), ("FROM", "x:${A}"), ("RUN", "a && b"), ("CMD", '["--help"]')]
    with pytest.raises(AssertionError):
        instructions("RUN a \\\n")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_opens_with_from_and_ends_in_relkd(name):
    steps = dockerfile(name)
    keywords = [k for k, _ in steps]
    first_from = keywords.index("FROM")
    assert all(k == "ARG" for k in keywords[:first_from]), f"{name}: only ARG may come before the first FROM"
    assert keywords.count("ENTRYPOINT") == 1
    entrypoint = next(a for k, a in steps if k == "ENTRYPOINT")
    # the JSON (exec) form: relkd is the container's process 1 and gets SIGTERM, not a shell
    assert json.loads(entrypoint) == ["relkd"], f"{name}: ENTRYPOINT must be exactly [\"relkd\"], got {entrypoint}"
    cmd = json.loads(next(a for k, a in reversed(steps) if k == "CMD"))
    assert isinstance(cmd, list) and cmd, f"{name}: CMD in JSON form"
    if cmd != ["--help"]:  # --help prints and exits; anything else must be a relkd command line
        parse_relkd(cmd)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_runs_as_the_non_root_user_it_creates(name):
    steps = dockerfile(name)
    users = [a for k, a in steps if k == "USER"]
    assert users, f"{name}: no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{name}: the final USER is root"
    created = re.findall(r"useradd [^&]*--uid (\d+)", " ".join(a for k, a in steps if k == "RUN"))
    assert created == [user], f"{name}: USER {user} should be the uid the image creates ({created})"
    # the user comes after the installs (they need root) and before the entry point
    keywords = [k for k, _ in steps]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert last_user > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert last_user < keywords.index("ENTRYPOINT")
    workdir = [a for k, a in steps if k == "WORKDIR"][-1]
    assert workdir == "/work", f"{name}: runs go to the working folder /work, got {workdir}"
    env = " ".join(a for k, a in steps if k == "ENV")
    assert "XDG_CACHE_HOME=/cache" in env


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return cfg


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_what_exists_and_what_the_build_needs(name):
    steps = dockerfile(name)
    rules = dockerignore_rules()
    copied: dict[str, int] = {}
    for index, sources, _ in copies(steps):
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"{name}: COPY {source}: no such file in the repository"
            assert not ignored(source, rules), f"{name}: COPY {source}: .dockerignore leaves it out"
            included = context_files(source)
            assert included, f"{name}: COPY {source}: every file of it is left out by .dockerignore"
            if path.is_dir():  # every module and study file of a copied folder reaches the image
                wanted = [p.relative_to(ROOT).as_posix() for p in path.rglob("*")
                          if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts]
                assert sorted(set(wanted) - set(included)) == [], f"{name}: COPY {source} leaves files out"
            copied.setdefault(source.rstrip("/"), index)
    # pip install . needs the metadata, the files setup.cfg reads and the packages, copied first
    cfg = _setup_cfg()
    needed = ["pyproject.toml", "setup.cfg"]
    needed += [v.split("file:", 1)[1].strip() for _, v in cfg.items("metadata") if v.strip().startswith("file:")]
    needed += [p.strip() for p in cfg.get("options.packages.find", "include").replace(",", " ").split()
               if "*" not in p]
    assert "README.md" in needed and "relkd" in needed
    install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and re.search(r"pip install \"?\.\[", a))
    late = [n for n in needed if copied.get(n, install + 1) > install]
    assert not late, f"{name}: pip install . runs before these are copied: {late}"
    extras = re.search(r"pip install \"?\.\[([\w,]+)\]", steps[install][1]).group(1).split(",")
    assert "postgres" in extras
    assert set(extras) <= set(cfg.options("options.extras_require")), f"{name}: unknown extras {extras}"
    assert "studies" in copied, f"{name}: the shipped study files belong in the image"


def test_the_cpu_image_takes_cpu_torch_and_the_cuda_image_a_cuda_base():
    cpu, cuda = dockerfile("Dockerfile"), dockerfile("Dockerfile.cuda")
    assert arg_defaults(cpu)["TORCH_INDEX_URL"].endswith("/whl/cpu")
    base = substitute(next(a for k, a in cuda if k == "FROM"), arg_defaults(cuda))
    assert re.match(r"(nvidia/cuda:[\d.]+-|pytorch/pytorch:.*-cuda)", base), f"not a CUDA base image: {base}"
    assert "ubuntu" in base or "pytorch" in base
    assert re.search(r"/whl/cu\d+$", arg_defaults(cuda)["TORCH_INDEX_URL"])
    cpu_base = next(a for k, a in cpu if k == "FROM")
    assert "cuda" not in cpu_base and re.match(r"python:3\.(1[1-9])", cpu_base)
    # both images end the same way: one entry point, one user, one working folder
    def tail(steps):
        return [(k, a) for k, a in steps if k in ("USER", "WORKDIR", "ENTRYPOINT", "CMD")][-4:]

    assert tail(cpu) == tail(cuda)


def test_dockerignore_rules_follow_docker():
    rules = [(False, _pattern_regex("data")), (False, _pattern_regex("**/__pycache__")),
             (False, _pattern_regex("*.md")), (True, _pattern_regex("README.md"))]
    assert ignored("data/x.gz", rules) and ignored("data", rules)
    assert not ignored("relkd/data/__init__.py", rules)  # a pattern is anchored at the root
    assert ignored("relkd/engine/__pycache__/a.pyc", rules) and ignored("__pycache__/a.pyc", rules)
    assert ignored("NOTES.md", rules) and not ignored("README.md", rules)  # the last match decides
    assert not ignored("docs/cli.md", rules)  # * does not cross a /


def test_dockerignore_keeps_out_environments_runs_data_and_caches():
    for path in [".venv/bin/python", ".git/HEAD", "runs/fmnist_quick/optuna.db", "data/train.gz",
                 ".gpu-bundle/x", "relkd/__pycache__/cli.cpython-311.pyc", ".pytest_cache/v/x",
                 ".hypothesis/examples/x", "relkd.egg-info/PKG-INFO", "checkpoints/a.pt", "build/lib/x.py"]:
        assert ignored(path), f".dockerignore lets {path} into the build context"
    for path in ["relkd/cli.py", "relkd/data/__init__.py", "relkd/data/base.py", "setup.cfg", "pyproject.toml",
                 "README.md", "studies/fmnist_quick.yaml"]:
        assert not ignored(path), f".dockerignore leaves out {path}, which the image needs"


def test_a_wheel_builds_from_exactly_what_the_dockerfile_copies(tmp_path):
    """The build context as Docker would send it, cut down to what the Dockerfile copies into
    its source folder, builds relkd's wheel with the package, its data modules and the entry point."""
    pytest.importorskip("setuptools")
    context = tmp_path / "src"
    steps = dockerfile("Dockerfile")
    for _, sources, dest in copies(steps):
        if dest.startswith("/"):
            continue  # outside the source folder (the study files in /work): not part of the build
        for source in sources:
            for rel in context_files(source):
                if (ROOT / source).is_dir():  # COPY folder dest: the folder's content into dest
                    target = context / dest / Path(rel).relative_to(source)
                else:  # COPY file... dest/: into dest under the file's name
                    target = context / dest / Path(rel).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, target)
    assert (context / "setup.cfg").is_file() and (context / "relkd" / "cli.py").is_file()
    wheels = tmp_path / "wheels"
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(wheels), str(context)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    (wheel,) = wheels.glob("relkd-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(z.read(n).decode() for n in names if n.endswith("METADATA"))
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "relkd").rglob("*.py")}
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)[:5]}"
    assert "relkd/data/__init__.py" in names
    assert re.search(r"^relkd = relkd\.cli:main$", entry_points, re.MULTILINE)
    assert "Provides-Extra: postgres" in metadata


def test_the_dockerfile_comments_show_working_relkd_commands():
    found = 0
    for name in DOCKERFILES:
        comments = [line[1:].strip() for line in (ROOT / name).read_text(encoding="utf-8").splitlines()
                    if line.startswith("#")]
        for line in "\n".join(comments).replace("\\\n", " ").splitlines():  # continued comment lines joined
            if "docker run" not in line:
                continue
            words = shlex.split(line)
            image = next(i for i, w in enumerate(words) if re.fullmatch(r"relkd(:[\w.-]+)?", w))
            argv = words[image + 1:]
            if "--help" in argv:
                continue
            args = parse_relkd(argv)
            assert (ROOT / args.study).is_file()
            found += 1
    assert found >= 2


# ----------------------------------------------------------------------------------------
# SLURM


def _directives() -> dict[str, str]:
    out = {}
    for line in SBATCH.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#SBATCH\s+(--[\w-]+)(?:=(\S+))?", line)
        if m:
            out[m.group(1)] = m.group(2) or ""
    return out


def shell_scripts() -> list[Path]:
    scripts = sorted([*ROOT.joinpath("examples").rglob("*.sh"), *ROOT.joinpath("examples").rglob("*.sbatch")])
    assert SBATCH in scripts
    return scripts


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.name)
def test_every_script_is_valid_bash(script):
    run = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert script.read_text(encoding="utf-8").startswith("#!/bin/bash"), "sbatch needs the interpreter line"


def test_the_sbatch_script_is_an_array_that_stops_on_term():
    d = _directives()
    assert re.fullmatch(r"\d+-\d+(%\d+)?", d.get("--array", "")), f"--array: {d.get('--array')}"
    signal_spec = d.get("--signal", "")
    m = re.fullmatch(r"(B:)?(TERM|SIGTERM|15)@(\d+)", signal_spec)
    assert m, f"--signal should send TERM before the time limit, got {signal_spec!r}"
    assert 30 <= int(m.group(3)) <= 600
    text = SBATCH.read_text(encoding="utf-8")
    worker = [line.strip() for line in text.splitlines() if "study worker" in line and not line.startswith("#")]
    assert len(worker) == 1, worker
    # B: signals only the batch shell: relkd must have replaced it (exec); else srun must carry it to the step
    if m.group(1):
        assert worker[0].startswith("exec "), "with --signal=B:... the worker must be exec'd"
    else:
        assert re.match(r"(exec )?srun ", worker[0]), "without B: the signal goes to job steps: srun the worker"
    assert re.search(r"^##SBATCH --gres=gpu:1$", text, re.MULTILINE), "the one-GPU option, commented out"
    assert "OPTUNA_STORAGE" in text and "postgresql" not in worker[0] and "--storage" not in worker[0]


def _sbatch_worker_argv() -> list[str]:
    """The worker's command line with the script's defaults (NAME=${NAME:-default}) filled in."""
    text = SBATCH.read_text(encoding="utf-8")
    defaults = dict(re.findall(r"^(\w+)=\$\{\1:-([^}]*)\}$", text, re.MULTILINE))
    line = next(x.strip() for x in text.splitlines() if "study worker" in x and not x.startswith("#"))
    words = [substitute(w, defaults) for w in shlex.split(line)]
    argv = relkd_argv(words)
    assert argv is not None
    return argv


def test_the_sbatch_worker_line_parses_and_its_study_exists():
    args = parse_relkd(_sbatch_worker_argv())
    assert (args.command, args.study_command, args.command_name) == ("study", "worker", "worker")
    assert (ROOT / args.study).is_file(), f"the default study {args.study} is not in the repository"
    from relkd.study import load_study_spec

    assert load_study_spec(str(ROOT / args.study)).study_name


def _fake_relkd(folder: Path) -> Path:
    """A stand-in relkd that records its pid and arguments, then waits for SIGTERM."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "relkd"
    fake.write_text("#!/bin/bash\n"
                    f"trap 'echo TERM >> {folder}/events; exit 130' TERM\n"
                    f"printf '%s\\n' \"$$\" \"$OMP_NUM_THREADS\" \"$OPTUNA_STORAGE\" \"$@\" > {folder}/argv\n"
                    "for _ in $(seq 600); do sleep 0.1; done; exit 3\n")  # gives up after a minute
    fake.chmod(0o755)
    return bin_dir


def _sbatch_env(tmp_path: Path, bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "SLURM_CPUS_PER_TASK": "3",
           "SLURM_SUBMIT_DIR": str(tmp_path / "nowhere"), "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "2"}
    env.update(extra)
    return env


def test_the_sbatch_script_execs_relkd_which_gets_the_sigterm(tmp_path):
    """Run as SLURM would run the batch step: relkd must be the batch process itself (the pid
    that --signal=B:TERM signals), with the threads and storage the script sets."""
    bin_dir = _fake_relkd(tmp_path)
    env = _sbatch_env(tmp_path, bin_dir, OPTUNA_STORAGE="postgresql+psycopg://relkd@db:5432/relkd")
    proc = subprocess.Popen(["bash", str(SBATCH)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # its own process group, for the clean-up below
    try:
        argv_file = tmp_path / "argv"
        deadline = time.monotonic() + 30
        while not (argv_file.exists() and len(argv_file.read_text().splitlines()) >= 4):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the stand-in relkd never started"
            time.sleep(0.05)
        pid, threads, storage, *argv = argv_file.read_text().splitlines()
        assert int(pid) == proc.pid, "relkd runs in a child of bash: the batch shell's SIGTERM would not reach it"
        assert threads == "3" and storage.startswith("postgresql+psycopg://")
        assert argv == _sbatch_worker_argv()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        try:  # the script and whatever it started (a stand-in relkd left running by a missing exec)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
    assert proc.returncode == 130, err
    assert (tmp_path / "events").read_text().split() == ["TERM"]
    assert "relkd worker 7_2" in out


def test_the_sbatch_script_refuses_to_start_without_a_storage(tmp_path):
    bin_dir = _fake_relkd(tmp_path)
    env = _sbatch_env(tmp_path, bin_dir)
    run = subprocess.run(["bash", str(SBATCH)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
                         check=False)
    assert run.returncode != 0 and "OPTUNA_STORAGE" in run.stderr
    assert not (tmp_path / "argv").exists(), "a worker without shared storage must not start"


# ----------------------------------------------------------------------------------------
# Kubernetes


def manifests() -> list[dict]:
    docs = []
    for path in sorted(KUBE.glob("*.yaml")):
        with open(path, encoding="utf-8") as fh:
            docs += [d for d in yaml.safe_load_all(fh) if d is not None]
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), d.get("kind")
    return docs


def one(docs: list[dict], *kinds: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] in kinds and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kinds} {name or ''}, found {len(found)}"
    return found[0]


def _worker_job(docs):
    return one(docs, "Job")


def _worker_container(job: dict) -> dict:
    containers = job["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if any("worker" in str(a) for a in c.get("command", []) + c.get("args", [])))


def test_the_manifests_have_the_kinds_a_study_needs():
    docs = manifests()
    kinds = {d["kind"] for d in docs}
    assert {"Job", "Service", "Secret"} <= kinds, kinds
    assert kinds & {"Deployment", "StatefulSet"}, "PostgreSQL as a Deployment or StatefulSet"
    job = _worker_job(docs)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["parallelism"], int) and spec["parallelism"] >= 1
    assert spec["completions"] == spec["parallelism"], "one index per worker"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy requires it
    grace = pod["terminationGracePeriodSeconds"]
    assert isinstance(grace, int) and grace >= 60, "room for the worker to put its trial back"
    names = {c["name"] for c in pod["containers"]}
    for rule in spec.get("podFailurePolicy", {}).get("rules", []):
        if "onExitCodes" in rule and "containerName" in rule["onExitCodes"]:
            assert rule["onExitCodes"]["containerName"] in names


def test_the_job_runs_relkd_study_worker_on_the_mounted_study():
    docs = manifests()
    job = _worker_job(docs)
    container = _worker_container(job)
    # the image's ENTRYPOINT is relkd: args alone are its arguments; a command must name relkd itself
    command = container.get("command")
    argv = container["args"] if command is None else relkd_argv([*command, *container.get("args", [])])
    assert argv is not None, f"the worker container does not run relkd: {command}"
    args = parse_relkd(argv)
    assert (args.study_command, args.command_name) == ("worker", "worker")
    assert args.storage is None, "the storage comes from OPTUNA_STORAGE (the Secret), not a flag with a password"
    pod = job["spec"]["template"]["spec"]
    study = Path(args.study)
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == study.parent)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = volume["configMap"]["name"]
    readme = (KUBE / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"kubectl create configmap {configmap} --from-file=([\w.-]+)=(\S+)", readme)
    assert m, f"README.md does not show how to create the ConfigMap {configmap}"
    assert m.group(1) == study.name, "the ConfigMap's key is the file the worker reads"
    assert (ROOT / m.group(2)).is_file()
    image_user = [a for k, a in dockerfile("Dockerfile") if k == "USER"][-1].split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == image_user
    assert pod["securityContext"]["runAsNonRoot"] is True
    # the same image name the README tells to replace
    assert f"image: {container['image']}" in readme


def test_the_storage_url_is_built_from_the_secret_and_points_at_the_service():
    docs = manifests()
    secret = one(docs, "Secret")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    service = one(docs, "Service")
    database = one(docs, "StatefulSet", "Deployment")
    container = _worker_container(_worker_job(docs))
    env = container["env"]
    names = [e["name"] for e in env]
    storage = next(e for e in env if e["name"] == "OPTUNA_STORAGE")["value"]
    m = re.fullmatch(r"postgresql\+psycopg://(\w+):\$\((\w+)\)@([\w.-]+):(\d+)/(\w+)", storage)
    assert m, f"OPTUNA_STORAGE should be postgresql+psycopg://USER:$(VAR)@HOST:PORT/DB, got {storage}"
    user, var, host, port, db = m.groups()
    assert var in names and names.index(var) < names.index("OPTUNA_STORAGE"), \
        "Kubernetes expands $(VAR) only from variables defined before"
    ref = next(e for e in env if e["name"] == var)["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret_keys
    # the password goes into the URL unescaped: the example's must need no escaping
    assert re.fullmatch(r"[\w.~-]+", secret["stringData"][ref["key"]])
    assert host == service["metadata"]["name"] and int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert service["spec"]["selector"].items() <= database["spec"]["template"]["metadata"]["labels"].items()
    db_env = {e["name"]: e for e in database["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert db_env["POSTGRES_USER"]["value"] == user and db_env["POSTGRES_DB"]["value"] == db
    assert db_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref
    threads = next(e for e in env if e["name"] == "OMP_NUM_THREADS")["valueFrom"]["resourceFieldRef"]
    assert threads["containerName"] == container["name"] and threads["resource"] in ("requests.cpu", "limits.cpu")
    assert threads["resource"].split(".")[0] in container["resources"]


def test_the_gpu_variant_is_described():
    text = (KUBE / "workers.yaml").read_text(encoding="utf-8") + (KUBE / "README.md").read_text(encoding="utf-8")
    assert "nvidia.com/gpu: 1" in text and "Dockerfile.cuda" in text
    block = re.search(r"```yaml\n(.*?)```", (KUBE / "README.md").read_text(encoding="utf-8"), re.DOTALL).group(1)
    snippet = yaml.safe_load(textwrap.dedent(block))
    assert snippet["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "cuda" in snippet["image"]
    # it fits where the README says: the worker container of workers.yaml has the same keys
    container = _worker_container(_worker_job(manifests()))
    assert set(snippet) <= set(container)


# ----------------------------------------------------------------------------------------
# The READMEs of examples/


READMES = sorted(ROOT.joinpath("examples").rglob("README.md"))
#: Names in the READMEs that are not files of the repository: outputs and the ConfigMap's key.
NOT_FILES = {"best.yaml", "study.yaml"}


def test_there_are_example_readmes():
    assert {p.parent.name for p in READMES} >= {"slurm", "kubernetes"}


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.parent.name)
def test_every_file_a_readme_names_exists_and_every_example_file_is_named(readme):
    text = readme.read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w-]+(?:\.[\w-]+)*\.(?:ya?ml|sbatch|sh|md|py|toml|cfg))\b",
                           text))
    named |= set(re.findall(r"\b(Dockerfile(?:\.cuda)?)\b", text))
    checked = 0
    for name in sorted(named - NOT_FILES):
        candidates = [ROOT / name, readme.parent / name]
        assert any(c.exists() for c in candidates), f"{readme.relative_to(ROOT)} names {name}, which does not exist"
        checked += 1
    assert checked >= 4
    for path in readme.parent.iterdir():
        if path.name != "README.md":
            assert path.name in text, f"{readme.relative_to(ROOT)} does not mention {path.name}"


@pytest.mark.parametrize("readme", READMES, ids=lambda p: p.parent.name)
def test_every_relkd_command_in_a_readme_parses(readme, monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands run from the repository root, as the READMEs say
    text = readme.read_text(encoding="utf-8")
    commands = fenced_commands(text)
    parsed = []
    for command in commands:
        words = shlex.split(command, comments=True)
        if "--wrap" in words:  # teacher=$(sbatch ... --wrap 'relkd ...'): the wrapped command, less the ")"
            words = shlex.split(words[words.index("--wrap") + 1].rstrip(")"))
        argv = relkd_argv(words)
        if argv is None or not argv:
            continue
        parsed.append(parse_relkd(argv))
    assert len(parsed) >= 3, f"{readme.name}: found {len(parsed)} relkd commands"
    # every study name asked about is the name of a study the README runs
    studies = set(re.findall(r"(studies/[\w-]+\.yaml)", text))
    from relkd.study import load_study_spec

    names = {load_study_spec(str(ROOT / s)).study_name for s in studies}
    asked = {a.study_name for a in parsed if getattr(a, "study_name", None)}
    assert asked and asked <= names, f"--study-name {asked - names} is no study the README runs ({names})"
    # every study file of a command exists
    for a in parsed:
        for attr in ("study", "setting"):
            if getattr(a, attr, None):
                assert (ROOT / getattr(a, attr)).is_file(), getattr(a, attr)
