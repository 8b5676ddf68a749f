"""Ray job submission without a cluster: token lookup, addresses, paths, entrypoints, errors."""

from __future__ import annotations

import http.server
import json
import os
import shlex
import socket
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from sentiment import cli, submit
from sentiment.config import ModelConfig, ScoreConfig, SentimentError, TrainConfig, from_dict


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token anywhere: no variables, and a HOME without ~/.ray/auth_token."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    return tmp_path


def test_token_sources_in_rays_order(no_token, monkeypatch):
    assert submit.read_token() == ("", "")
    (no_token / ".ray").mkdir()
    (no_token / ".ray" / "auth_token").write_text("from-home\n")
    assert submit.read_token() == ("from-home", "~/.ray/auth_token")
    named = no_token / "token.txt"
    named.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert submit.read_token() == ("from-path", f"RAY_AUTH_TOKEN_PATH ({named})")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.read_token() == ("from-env", "RAY_AUTH_TOKEN")


@pytest.mark.parametrize(("content", "problem"), [(None, "no such file"), ("", "which is empty")])
def test_a_bad_token_path_is_named(no_token, monkeypatch, content, problem):
    path = no_token / "token.txt"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    with pytest.raises(SentimentError, match=f"RAY_AUTH_TOKEN_PATH names {path}.*{problem}"):
        submit.read_token()


def test_no_cluster_answers(no_token):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SentimentError) as info:
        submit.connect(f"127.0.0.1:{port}")
    assert str(info.value) == f"no Ray cluster answers at http://127.0.0.1:{port}"


def test_something_else_answers(no_token):
    class NotRay(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotRay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SentimentError, match=r"is not a Ray dashboard \(HTTP 404\)"):
            submit.connect(f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()


def _summary_server(replies: list[list[dict]]) -> http.server.HTTPServer:
    """A dashboard stand-in whose /nodes?view=summary answers `replies` in turn, then the last."""
    import json

    class Nodes(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            nodes = replies.pop(0) if len(replies) > 1 else replies[0]
            body = json.dumps({"data": {"summary": nodes}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Nodes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


HEAD_NODE = {
    "raylet": {"isHeadNode": True},
    "cmdline": ["raylet", "--python_worker_command=/opt/venv/bin/python3 /x/setup_worker.py -u"],
}


LISTED = {"raylet": {"isHeadNode": True}}  # known to the GCS, no agent report yet


@pytest.mark.parametrize(
    "replies",
    [
        # A head that has just started answers an empty summary for a few seconds (seen:
        # 2.7 s), then lists itself from the GCS before its agent has reported a command
        # line (what CI met: the head listed, no `cmdline`, and a bare `python` ran).
        [[], [], [HEAD_NODE]],
        [[], [LISTED], [LISTED], [HEAD_NODE]],
    ],
    ids=["empty-summary", "head-without-cmdline"],
)
def test_cluster_python_waits_for_the_head_nodes_command_line(caplog, replies):
    server = _summary_server(replies)
    cluster = submit.Cluster(f"http://127.0.0.1:{server.server_port}", None, {})
    try:
        assert submit.cluster_python(cluster, wait_s=10) == "/opt/venv/bin/python3"
        assert "could not tell" not in caplog.text
    finally:
        server.shutdown()


def test_cluster_python_gives_up_with_a_warning(caplog):
    server = _summary_server([[]])  # never reports a node
    cluster = submit.Cluster(f"http://127.0.0.1:{server.server_port}", None, {})
    try:
        assert submit.cluster_python(cluster, wait_s=1) == ""
        assert "could not tell the cluster's Python" in caplog.text
    finally:
        server.shutdown()


def test_ray_client_address_is_refused():
    with pytest.raises(SentimentError, match="Ray Client address"):
        submit.connect("ray://head:10001")


def test_paths_become_absolute_and_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = submit.absolute_paths(TrainConfig(data="data", store="s3://b/models"))
    assert train.data == str(tmp_path / "data") and train.store == "s3://b/models"
    assert train.embeddings.source == "train"
    score = submit.absolute_paths(ScoreConfig(inputs=("in/*.parquet", "gs://b/x"), output="out"))
    assert score.inputs == (str(tmp_path / "in/*.parquet"), "gs://b/x")
    assert score.output == str(tmp_path / "out") and score.model == "latest"
    # a model id names a model in the cluster's store: kept as an id, not made a path
    by_id = submit.absolute_paths(ScoreConfig(inputs=("a",), model="gru-0123456789ab"))
    assert by_id.model == "gru-0123456789ab"
    (tmp_path / "gru-ba9876543210").mkdir()  # unless a directory of that name is here
    local = submit.absolute_paths(ScoreConfig(inputs=("a",), model="gru-ba9876543210"))
    assert local.model == str(tmp_path / "gru-ba9876543210")
    assert submit.absolute_paths(ScoreConfig(inputs=("a",), model="m")).model == str(tmp_path / "m")


def test_entrypoint_is_the_cli_with_every_setting_as_json():
    cfg = ScoreConfig(inputs=("/data/my reviews.parquet",), text_column="it's", actors=3)
    words = shlex.split(submit.entrypoint("score", cfg, "/opt/py 3/bin/python"))
    assert words[:5] == ["/opt/py 3/bin/python", "-m", "sentiment", "score", "--config"]
    assert from_dict(ScoreConfig, json.loads(words[5])) == cfg
    train = TrainConfig(data="/d", model=ModelConfig(variant="gruh", hidden_size=8))
    words = shlex.split(submit.entrypoint("train", train, "python"))
    assert from_dict(TrainConfig, json.loads(words[5])) == train


def test_config_option_carries_every_setting_and_only_them(tmp_path):
    """`--config` JSON (inline or a file) is what a job runs with; mixed with another
    setting, or malformed, it is one clear error."""
    settings = json.dumps({"data": str(tmp_path / "no-such-dataset"), "epochs": 2})
    (tmp_path / "run.json").write_text(settings)
    for given in (settings, str(tmp_path / "run.json")):
        result = CliRunner().invoke(cli.app, ["train", "--config", given])
        assert result.exit_code == 1 and "no-such-dataset" in result.output, result.output
    cases = [
        (
            ["train", "--config", settings, "--epochs", "3"],
            "--config holds every setting: drop --epochs",
        ),
        (["score", "--config", "[1]"], "--config: expected a JSON object"),
        (["score", "--config", "{not json"], "--config: not JSON"),
        (
            ["score", "--config", '{"inputs": ["a"], "actors": 1, "colour": 2}'],
            "unknown ScoreConfig settings: colour",
        ),
        (["score", "--config", str(tmp_path / "missing.json")], "missing.json: No such file"),
    ]
    for args, says in cases:
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 1, (args, result.output)
        assert says in result.output and "Traceback" not in result.output, (args, result.output)


def test_inside_a_ray_job_the_cli_runs_there_instead_of_submitting(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert cli._submitting("http://head:8265")
    assert not cli._submitting("") and not cli._submitting("local")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    assert not cli._submitting("http://head:8265")


def test_jobs_commands_need_an_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = CliRunner().invoke(cli.app, ["jobs", "list"], env={"RAY_ADDRESS": None})
    assert result.exit_code == 1
    assert "no Ray cluster given: use --address or set RAY_ADDRESS" in result.output
    assert "Traceback" not in result.output


def _recording_server(version_status: int) -> tuple[http.server.HTTPServer, list[dict]]:
    """A dashboard stand-in that does not say it uses tokens (404 on
    /api/authentication_mode) and records every request's headers."""
    seen: list[dict] = []

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            if self.path.startswith("/api/version") and version_status == 200:
                body = json.dumps({"ray_version": "2.60.0", "version": "4"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404 if version_status == 200 else version_status)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


_CONNECT = """
import sys
from sentiment import submit
from sentiment.config import SentimentError
try:
    submit.connect(sys.argv[1])
except SentimentError as exc:
    print(f"error: {exc}")
"""


@pytest.mark.parametrize("mode_here", ["", "token"], ids=["mode-unset", "RAY_AUTH_MODE=token"])
@pytest.mark.parametrize("version_status", [200, 401])
def test_the_token_goes_only_to_a_server_that_says_it_uses_tokens(
    no_token, version_status, mode_here
):
    """In a process of its own, as the CLI is. Also where RAY_AUTH_MODE=token is set (as
    users of `ray job submit` do, and as starting a local Ray does): Ray's job client then
    adds the token itself, whatever the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_TOKEN="secret-token-value", **({"RAY_AUTH_MODE": mode_here} if mode_here else {})
    )
    server, seen = _recording_server(version_status)
    try:
        address = f"http://127.0.0.1:{server.server_port}"
        done = subprocess.run(
            [sys.executable, "-c", _CONNECT, address],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(r["path"] == "/api/authentication_mode" for r in seen)
    assert any(r["path"].startswith("/api/version") for r in seen)
    assert not [r for r in seen if "authorization" in r or "secret-token-value" in str(r)]
    if version_status == 401 or mode_here:
        assert "does not say it uses Ray tokens" in done.stdout, done.stdout
