"""The git workflow as shipped: examples/ci/*.yml run job by job against real git repositories,
and the pre-commit hook of .pre-commit-hooks.yaml run by pre-commit itself.

Each pipeline job's shell lines run as the CI platform runs them (bash, errexit, pipefail),
with the installed `iacloud` command, the fake provider (registered through its entry point
on PYTHONPATH) and a SQLite state shared by every "runner" in place of PostgreSQL. What only
the platform does is played by the test: artifacts are kept between jobs, GitLab's API is a
small local HTTP server, and GitHub's `gh pr comment` step is the one step not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml
from click.testing import CliRunner

from iacloud.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
BIN = Path(sys.executable).parent

STACK_V1 = """
version = 1
name = "web"

[parameters.token]
type = "string"
hidden = true                  # no default: CI brings it from a secret

[parameters.size]
type = "number"
default = 1

[resources.net]
type = "fake_thing"
name = "net"

[resources.vm]
type = "fake_thing"
count = 2
name = "vm-%index%"
size = { get_param = "size" }
ref = { get_resource = "net" }
secret = { get_param = "token" }
"""
STACK_V2 = STACK_V1.replace("default = 1", "default = 3")
TOKEN = "tok-4bd1c0ffee-secret"
SECRETS_ENV = f'[parameters]\ntoken = "{TOKEN}"\n'


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


class Origin:
    """The team's repository: pull requests are branches merged into main with --no-ff."""

    def __init__(self, path: Path, ci_file: str, ci_path: str) -> None:
        self.path = path
        path.mkdir()
        git(path, "init", "-q", "-b", "main")
        (path / "README.md").write_text("stacks of the team\n")
        (path / ci_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "examples" / "ci" / ci_file, path / ci_path)
        git(path, "add", "-A")
        git(path, "commit", "-qm", "CI pipeline")

    def pull_request(self, branch: str, stack_text: str) -> str:
        """Commit the stack on a new branch; return the branch's head commit."""
        git(self.path, "checkout", "-q", "-b", branch, "main")
        (self.path / "stacks").mkdir(exist_ok=True)
        (self.path / "stacks" / "web.toml").write_text(stack_text)
        git(self.path, "add", "-A")
        git(self.path, "commit", "-qm", f"{branch}: web stack")
        git(self.path, "checkout", "-q", "main")
        return git(self.path, "rev-parse", branch)

    def merge(self, branch: str) -> str:
        git(self.path, "merge", "-q", "--no-ff", "-m", f"Merge {branch}", branch)
        return git(self.path, "rev-parse", "HEAD")

    def checkout(self, where: Path, commit: str) -> Path:
        """A runner's fresh working copy at `commit`."""
        shutil.rmtree(where, ignore_errors=True)
        git(self.path.parent, "clone", "-q", str(self.path), str(where))
        git(where, "checkout", "-q", commit)
        return where


@pytest.fixture
def ci_env(tmp_path: Path, fake_entry_point: Path) -> dict[str, str]:
    """What every job sees: iacloud on PATH, the fake provider, no terminal, git identity."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONPATH=os.pathsep.join([str(fake_entry_point), str(TESTS)]),
        GIT_AUTHOR_NAME="ci",
        GIT_AUTHOR_EMAIL="ci@example.invalid",
        GIT_COMMITTER_NAME="ci",
        GIT_COMMITTER_EMAIL="ci@example.invalid",
        CI="true",
    )
    env.pop("IACLOUD_STATE", None)
    (tmp_path / "home").mkdir()
    env["HOME"] = str(tmp_path / "home")  # git clone must not read the user's config
    return env


def shared_state(tmp_path: Path) -> str:
    (tmp_path / "shared").mkdir(exist_ok=True)
    return f"sqlite:///{tmp_path / 'shared' / 'state.db'}"


def run_shell(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A script as GitHub's `shell: bash` and GitLab's shell executor run it."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def fake_objects(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The fake provider's objects by name, wherever the stack's data directory is."""
    found = {}
    for f in data_dir.rglob("fake_thing/*"):
        obj = json.loads(f.read_text())
        found[obj["inputs"]["name"]] = obj
    return found


# -- GitHub Actions ------------------------------------------------------------------------

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


class GitHubRun:
    """Runs one job of the workflow: `run:` steps in bash, the known actions played here."""

    def __init__(self, workflow: dict[str, Any], store: dict[str, dict[str, bytes]],
                 values: dict[str, str], env: dict[str, str], tmp: Path) -> None:  # fmt: skip
        self.workflow, self.store, self.values = workflow, store, values
        self.env, self.tmp = env, tmp
        self.outputs: dict[str, dict[str, str]] = {}
        self.skipped: list[str] = []

    def expr(self, text: str) -> str:
        def one(m: re.Match[str]) -> str:
            key = m.group(1)
            step = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", key)
            if step:
                return self.outputs[step.group(1)][step.group(2)]
            return self.values[key]  # an expression the test does not know fails it

        return EXPR.sub(one, str(text))

    def job(self, name: str, cwd: Path) -> subprocess.CompletedProcess[str] | None:
        job = self.workflow["jobs"][name]
        runner_temp = self.tmp / f"runner-temp-{name}"
        runner_temp.mkdir(exist_ok=True)
        for step in job["steps"]:
            env = dict(self.env, RUNNER_TEMP=str(runner_temp), GITHUB_WORKSPACE=str(cwd))
            for scope in (self.workflow, job, step):
                env.update({k: self.expr(v) for k, v in (scope.get("env") or {}).items()})
            if "uses" in step:
                self.action(step, cwd)
                continue
            assert "${{" not in step["run"], "expressions go through env, not into scripts"
            if "gh pr comment" in step["run"]:
                assert "--body-file plan.md" in step["run"]
                self.skipped.append(step["name"])
                continue
            out = runner_temp / "github_output"
            out.write_text("")
            env["GITHUB_OUTPUT"] = str(out)
            proc = run_shell(step["run"], cwd, env)
            if "id" in step:
                self.outputs[step["id"]] = dict(
                    line.split("=", 1) for line in out.read_text().splitlines()
                )
            if proc.returncode != 0:
                return proc
            last = proc
        return last

    def action(self, step: dict[str, Any], cwd: Path) -> None:
        action = step["uses"].split("@")[0]
        given = {k: self.expr(v) for k, v in (step.get("with") or {}).items()}
        if action == "actions/checkout":
            if "ref" in given:
                assert git(cwd, "rev-parse", "HEAD") == given["ref"]
        elif action == "actions/upload-artifact":
            files = given["path"].split()
            self.store[given["name"]] = {f: (cwd / f).read_bytes() for f in files}
        elif action == "actions/download-artifact":
            assert given["run-id"] == self.values["plan-run-id"]
            for f, data in self.store[given["name"]].items():
                (cwd / given.get("path", ".") / f).write_bytes(data)
        elif action == "actions/github-script":
            # it looks up the plan run of the reviewed commit through GitHub's API
            assert "head_sha: context.payload.pull_request.head.sha" in given["script"]
            self.outputs[step["id"]] = {"run-id": self.values["plan-run-id"]}
        else:
            raise AssertionError(f"the test does not know the action {action}")


def test_github_actions_pipeline_plans_comments_and_applies_the_reviewed_plan(
    tmp_path: Path, ci_env: dict[str, str], data_dir: Path
) -> None:
    workflow = yaml.safe_load((ROOT / "examples/ci/github-actions.yml").read_text())
    assert set(workflow["jobs"]) == {"plan", "apply"}
    assert "merged" in workflow["jobs"]["apply"]["if"]
    assert "closed" in workflow["jobs"]["plan"]["if"]
    origin = Origin(tmp_path / "origin", "github-actions.yml", ".github/workflows/iacloud.yml")
    values = {
        "secrets.IACLOUD_STATE": shared_state(tmp_path),
        "secrets.IACLOUD_SECRETS_ENV": SECRETS_ENV,
        "github.token": "test-token",
        "github.event.pull_request.number": "1",
        "plan-run-id": "4242",
    }
    store: dict[str, dict[str, bytes]] = {}

    def pull_request(branch: str, text: str) -> str:
        head = origin.pull_request(branch, text)
        run = GitHubRun(workflow, store, values, ci_env, tmp_path)
        proc = run.job("plan", origin.checkout(tmp_path / "runner-a", head))
        assert proc is not None and proc.returncode == 0, proc.stdout + proc.stderr
        assert run.skipped == ["Post the plan as a review comment"]
        assert run.outputs["plan"] == {"changes": "true"}
        markdown = store["iacloud-plan"]["plan.md"].decode()
        assert TOKEN not in markdown and TOKEN not in proc.stdout + proc.stderr
        return markdown

    def merged(branch: str) -> subprocess.CompletedProcess[str]:
        values["github.event.pull_request.merge_commit_sha"] = sha = origin.merge(branch)
        run = GitHubRun(workflow, store, values, ci_env, tmp_path)
        shutil.rmtree(tmp_path / "runner-a")  # another runner applies
        proc = run.job("apply", origin.checkout(tmp_path / "runner-b", sha))
        assert proc is not None
        return proc

    markdown = pull_request("add-web", STACK_V1)
    assert "3 to create" in markdown and "`vm[1]`" in markdown
    proc = merged("add-web")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fake_objects(data_dir)["vm-1"]["inputs"]["size"] == 1

    markdown = pull_request("grow-vms", STACK_V2)
    assert "0 to create, 2 to update" in markdown
    assert "| `~` | `vm[0]` | fake_thing | update | live | size |" in markdown
    plan = json.loads(store["iacloud-plan"]["plan.json"])
    assert plan["serial"] == 1
    proc = merged("grow-vms")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sizes = {n: o["inputs"]["size"] for n, o in fake_objects(data_dir).items()}
    assert sizes == {"net": 1, "vm-0": 3, "vm-1": 3}

    # the apply job run again: the plan it applied is stale now and is refused
    proc = GitHubRun(workflow, store, values, ci_env, tmp_path).job("apply", tmp_path / "runner-b")
    assert proc is not None and proc.returncode == 1, proc.stdout + proc.stderr
    assert "made from state serial 1" in proc.stderr and "make a new plan" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- GitLab CI ------------------------------------------------------------------------------


class FakeGitLab:
    """The few GitLab API v4 calls of the pipeline, on 127.0.0.1, with the token checked."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.notes: list[str] = []
        self.routes: dict[str, Any] = {}  # path after /api/v4/projects/7/ -> JSON or bytes
        gitlab = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def route(self) -> str | None:
                if self.headers.get("PRIVATE-TOKEN") != gitlab.token:
                    self.reply(401, b'{"message": "401 Unauthorized"}')
                    return None
                prefix = "/api/v4/projects/7/"
                if not self.path.startswith(prefix):
                    self.reply(404, b"{}")
                    return None
                return self.path[len(prefix) :]

            def do_GET(self) -> None:
                path = self.route()
                if path is None:
                    return
                body = gitlab.routes.get(path)
                if body is None:
                    self.reply(404, b'{"message": "404 Not found"}')
                else:
                    self.reply(200, body if isinstance(body, bytes) else json.dumps(body).encode())

            def do_POST(self) -> None:
                path = self.route()
                if path is None:
                    return
                data = self.rfile.read(int(self.headers["Content-Length"])).decode()
                if path != "merge_requests/1/notes":
                    self.reply(404, b"{}")
                    return
                gitlab.notes.append(parse_qs(data)["body"][0])
                self.reply(201, b'{"id": 1}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v4"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gitlab() -> Iterator[FakeGitLab]:
    server = FakeGitLab("glpat-test-token")
    yield server
    server.close()


def flatten(lines: list[Any]) -> list[str]:
    """A `- *anchor` item of a script is a list inside the list."""
    out: list[str] = []
    for line in lines:
        out += flatten(line) if isinstance(line, list) else [line]
    return out


def run_gitlab_job(pipeline: dict[str, Any], name: str, cwd: Path,
                   env: dict[str, str]) -> subprocess.CompletedProcess[str]:  # fmt: skip
    job = pipeline[name]
    env = dict(env, **pipeline.get("variables", {}), **job.get("variables", {}))
    script = flatten(job.get("before_script", []) + job["script"])
    proc = run_shell("\n".join(script), cwd, env)
    if "after_script" in job:
        run_shell("\n".join(flatten(job["after_script"])), cwd, env)
    return proc


def test_gitlab_pipeline_plans_posts_a_note_and_applies_the_reviewed_plan(
    tmp_path: Path, ci_env: dict[str, str], data_dir: Path, gitlab: FakeGitLab
) -> None:
    pipeline = yaml.safe_load((ROOT / "examples/ci/gitlab-ci.yml").read_text())
    assert pipeline["stages"] == ["validate", "plan", "apply"]
    origin = Origin(tmp_path / "origin", "gitlab-ci.yml", ".gitlab-ci.yml")
    builds = tmp_path / "builds"
    builds.mkdir()
    env = dict(
        ci_env,
        IACLOUD_STATE=shared_state(tmp_path),
        IACLOUD_SECRETS_ENV=SECRETS_ENV,
        IACLOUD_GITLAB_TOKEN=gitlab.token,
        CI_API_V4_URL=gitlab.url,
        CI_PROJECT_ID="7",
        CI_MERGE_REQUEST_IID="1",
        CI_BUILDS_DIR=str(builds),
        CI_JOB_ID="900",
    )
    plan_artifact: dict[str, bytes] = {}

    def merge_request(branch: str, text: str) -> str:
        head = origin.pull_request(branch, text)
        cwd = origin.checkout(tmp_path / "runner-a", head)
        for job in ("iacloud-validate", "iacloud-plan"):
            proc = run_gitlab_job(pipeline, job, cwd, env)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert TOKEN not in proc.stdout + proc.stderr
        assert list(builds.iterdir()) == []  # the secrets file is gone after each job
        for path in pipeline["iacloud-plan"]["artifacts"]["paths"]:
            plan_artifact[path] = (cwd / path).read_bytes()
        markdown = plan_artifact["plan.md"].decode()
        assert gitlab.notes[-1] == markdown  # the note is the rendered plan
        assert TOKEN not in markdown
        gitlab.routes.update({
            "merge_requests/1": {"iid": 1, "sha": head},
            "merge_requests/1/pipelines": [
                {"id": 31, "sha": head, "status": "failed"},
                {"id": 30, "sha": head, "status": "success"},
            ],
            "pipelines/30/jobs?scope=success": [
                {"id": 501, "name": "iacloud-validate"}, {"id": 502, "name": "iacloud-plan"},
            ],
            "jobs/502/artifacts/plan.json": plan_artifact["plan.json"],
        })  # fmt: skip
        return markdown

    def merged(branch: str) -> subprocess.CompletedProcess[str]:
        sha = origin.merge(branch)
        gitlab.routes[f"repository/commits/{sha}/merge_requests"] = [{"iid": 1}]
        shutil.rmtree(tmp_path / "runner-a")
        cwd = origin.checkout(tmp_path / "runner-b", sha)
        return run_gitlab_job(pipeline, "iacloud-apply", cwd, dict(env, CI_COMMIT_SHA=sha))

    markdown = merge_request("add-web", STACK_V1)
    assert "3 to create" in markdown
    proc = merged("add-web")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(fake_objects(data_dir)) == {"net", "vm-0", "vm-1"}

    markdown = merge_request("grow-vms", STACK_V2)
    assert "| `~` | `vm[1]` | fake_thing | update | live | size |" in markdown
    proc = merged("grow-vms")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fake_objects(data_dir)["vm-1"]["inputs"]["size"] == 3

    # the same merge pipeline retried: the reviewed plan is stale now
    head = git(origin.path, "rev-parse", "HEAD")
    proc = run_gitlab_job(pipeline, "iacloud-apply", tmp_path / "runner-b",
                          dict(env, CI_COMMIT_SHA=head))  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "make a new plan" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_exit_code_1_fails_the_plan_job_with_the_error_shown(
    tmp_path: Path, ci_env: dict[str, str], gitlab: FakeGitLab
) -> None:
    """Without the secret the hidden parameter has no value: exit 1, no note, no artifact."""
    pipeline = yaml.safe_load((ROOT / "examples/ci/gitlab-ci.yml").read_text())
    origin = Origin(tmp_path / "origin", "gitlab-ci.yml", ".gitlab-ci.yml")
    cwd = origin.checkout(tmp_path / "runner", origin.pull_request("add-web", STACK_V1))
    (tmp_path / "builds").mkdir()
    env = dict(ci_env, IACLOUD_STATE=shared_state(tmp_path), IACLOUD_GITLAB_TOKEN=gitlab.token,
               CI_API_V4_URL=gitlab.url, CI_PROJECT_ID="7", CI_MERGE_REQUEST_IID="1",
               CI_BUILDS_DIR=str(tmp_path / "builds"), CI_JOB_ID="901")  # fmt: skip
    proc = run_gitlab_job(pipeline, "iacloud-plan", cwd, env)
    assert proc.returncode == 1
    assert "parameter 'token' has no default and no value was given" in proc.stderr
    assert gitlab.notes == []


# -- pre-commit -----------------------------------------------------------------------------


def test_hooks_file_recognizes_stack_files_only() -> None:
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"iacloud-validate", "iacloud-validate-system"}
    assert {h["language"] for h in hooks.values()} == {"python", "system"}
    for hook in hooks.values():
        assert hook["entry"] == "iacloud validate"
        files, exclude = re.compile(hook["files"]), re.compile(hook["exclude"])

        def picked(path: str, files: re.Pattern[str] = files,
                   exclude: re.Pattern[str] = exclude) -> bool:  # fmt: skip
            return bool(files.search(path)) and not exclude.search(path)

        assert picked("stacks/web.toml") and picked("infra/stacks/prod/db.toml")
        assert not picked("pyproject.toml") and not picked("stacks/web.env.toml")
        assert not picked("stacks/README.md") and not picked("mystacks/web.toml")
        assert picked("stacks/web.yaml") and picked("stacks/heat/db.yml")  # HOT templates
        assert not picked("stacks/web.env.yaml") and not picked(".gitlab-ci.yml")


def test_validate_takes_many_stacks_and_names_each_bad_file(write_stack) -> None:
    good = write_stack('version = 1\n[resources.a]\ntype = "fake_thing"\n', "good.toml")
    bad = write_stack('version = 1\n[resources.a]\ntype = "fake_thing"\nnmae = "x"\n', "bad.toml")
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(good), str(bad)])
    assert result.exit_code == 1
    assert f"{good}: valid (1 resources)." in result.output
    assert f"{bad}, resources.a" in result.output and "nmae" in result.output
    result = runner.invoke(cli, ["validate", "--json", str(good), str(bad)])
    data = json.loads(result.stdout)
    assert [(d["file"], d["valid"]) for d in data] == [(str(good), True), (str(bad), False)]
    result = runner.invoke(cli, ["validate", "--json", str(good)])
    assert json.loads(result.stdout) == {"valid": True, "stack": "good", "resources": 1}


def hook_repo(where: Path) -> tuple[str, str]:
    """This checkout's tracked files as they are now, committed in a repository of their own
    (what `pre-commit try-repo` does): the hook repository pre-commit installs from."""
    where.mkdir()
    files = git(ROOT, "ls-files", "-z").split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, where / name)
    git(where, "init", "-q")
    git(where, "add", "-A")
    git(where, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "x")
    return str(where), git(where, "rev-parse", "HEAD")


WEB_WITH_SECRET = """
version = 1
[parameters.token]
type = "string"
hidden = true
constraints = [{ length = { min = 8 } }]
[resources.data]
type = "volume"
size_gib = 1
"""


def test_pre_commit_hook_blocks_a_commit_with_a_bad_stack_and_names_it(
    tmp_path: Path, ci_env: dict[str, str]
) -> None:
    """The README's .pre-commit-config.yaml, installed as the git hook: pre-commit installs
    iacloud from the hook repository into its own environment (pip: the package index must
    be reachable) and `git commit` runs it on the staged stack files."""
    url, rev = hook_repo(tmp_path / "hooks")
    repo = tmp_path / "repo"
    (repo / "stacks").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / ".pre-commit-config.yaml").write_text(f"""
repos:
  - repo: {url}
    rev: {rev}
    hooks:
      - id: iacloud-validate
        exclude: ^stacks/web\\.toml$|\\.env\\.toml$
      - id: iacloud-validate
        name: iacloud validate (web, placeholder secrets)
        files: ^stacks/web\\.toml$
        args: [-e, stacks/web.validate.env.toml]
""")
    stacks = repo / "stacks"
    (stacks / "good.toml").write_text('version = 1\n[resources.d]\ntype = "volume"\nsize_gib = 1\n')
    (stacks / "bad.toml").write_text('version = 1\n[resources.d]\ntype = "volume"\nsize_gb = 1\n')
    (stacks / "web.toml").write_text(WEB_WITH_SECRET)
    (stacks / "web.validate.env.toml").write_text('[parameters]\ntoken = "placeholder"\n')
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    env = dict(ci_env, PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"))
    env.pop("PYTHONPATH")  # the hook's environment has only what pre-commit installed
    subprocess.run([str(BIN / "pre-commit"), "install"], cwd=repo, env=env, check=True,
                   capture_output=True)  # fmt: skip

    def commit() -> subprocess.CompletedProcess[str]:
        git(repo, "add", "-A")
        return subprocess.run(["git", "commit", "-qm", "stacks"], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    proc = commit()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "iacloud validate" in out and "Failed" in out
    assert "stacks/bad.toml, resources.d" in out and "size_gb" in out
    assert "parameter 'token'" not in out  # validated with its placeholder, and passed
    assert "pyproject.toml" not in out and "env.toml" not in out
    assert git(repo, "rev-list", "--all") == ""  # nothing was committed

    (stacks / "bad.toml").write_text('version = 1\n[resources.d]\ntype = "volume"\nsize_gib = 1\n')
    proc = commit()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "iacloud validate (web, placeholder secrets)" in proc.stdout + proc.stderr
    assert git(repo, "rev-list", "--all") != ""
