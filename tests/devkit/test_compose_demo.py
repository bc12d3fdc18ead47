"""docker-compose.yaml's demo profile (elevation.devkit.compose_demo): the emulator serves beyond the loopback, and
the seed builds `make demo`'s world in an emulator it reaches by URL and writes what the Airflow containers read."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from elevation.devkit import compose_demo
from elevation.devkit import emulator as emulator_module
from elevation.devkit.emulator import AwsEmulator
from elevation.devkit.sandbox import read_env
from elevation.devkit.world import ACCOUNTS, PEOPLE, PERMISSION_SETS, TRAIL_BUCKET, standing_assignments


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {"folder": tmp_path / "demo", "data_dir": tmp_path / "data", "reports_dir": tmp_path / "reports"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_seed_builds_the_demo_world_and_writes_the_overlay(emulator: AwsEmulator, folders: dict[str, Path]) -> None:
    from elevation.config import load_config

    emulator.reset()
    emulator.client("s3").create_bucket(Bucket="left-over-from-before")  # a previous run's state: wiped
    assert compose_demo.seed(emulator.endpoint_url, **folders) is True
    folder = folders["folder"]

    config = load_config(folder / compose_demo.CONFIG_FILE)
    sso, store = emulator.client("sso-admin"), emulator.client("identitystore")
    (instance,) = sso.list_instances()["Instances"]
    assert config.policy.identity_center.instance_arn == instance["InstanceArn"]
    accounts = {account["Name"]: account["Id"] for account in emulator.client("organizations").list_accounts()["Accounts"]}
    assert set(ACCOUNTS) <= set(accounts) and config.policy.management_account_id in accounts.values()
    users = store.list_users(IdentityStoreId=instance["IdentityStoreId"])["Users"]
    assert {user["UserName"] for user in users} == set(PEOPLE)
    permission_sets = sso.list_permission_sets(InstanceArn=instance["InstanceArn"], MaxResults=100)["PermissionSets"]
    assert len(permission_sets) == len(PERMISSION_SETS)
    assert len(emulator.assignments()) == len(standing_assignments())
    buckets = {bucket["Name"] for bucket in emulator.client("s3").list_buckets()["Buckets"]}
    assert buckets == {TRAIL_BUCKET}
    assert config.extract.s3_bucket == TRAIL_BUCKET
    assert config.extract.output_location == str(folders["data_dir"] / "cloudtrail")
    assert config.audit.reports_location == str(folders["reports_dir"])
    assert config.reconcile.mode == "report" and len(config.reconcile.ous) == len(set(ACCOUNTS.values()))
    assert not config.notifications.enabled  # no Slack in the demo

    env = read_env(folder / compose_demo.OVERLAY_FILE)
    assert env["ELEVATION_CONFIG"] == str(folder / compose_demo.CONFIG_FILE)
    assert env["ELEVATION_EMULATOR_URL"] == emulator.endpoint_url
    for conn_id in compose_demo.AWS_CONNECTIONS:
        connection = json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"])
        assert connection["conn_type"] == "aws" and connection["extra"]["endpoint_url"] == emulator.endpoint_url
    passwords = json.loads((folder / compose_demo.PASSWORDS_FILE).read_text(encoding="utf-8"))
    assert passwords == {login: f"{login}-pw" for login in PEOPLE}
    assert Path(env["ELEVATION_DEMO_PASSWORDS"]) == folder / compose_demo.PASSWORDS_FILE
    assert env["ELEVATION_DEMO_USERS"].split(",") == [f"{login}:USER" for login in PEOPLE]
    assert not list(folder.glob("*.partial"))


def test_seed_keeps_a_seeded_emulator_and_rebuilds_after_a_reset(emulator: AwsEmulator,
                                                                  folders: dict[str, Path]) -> None:
    emulator.reset()
    assert compose_demo.seed(emulator.endpoint_url, **folders) is True
    config = folders["folder"] / compose_demo.CONFIG_FILE
    first = config.read_text(encoding="utf-8")
    emulator.client("s3").create_bucket(Bucket="made-by-the-demo-meanwhile")
    assert compose_demo.seed(emulator.endpoint_url, **folders) is False  # a second `up`: the demo's state stays
    assert config.read_text(encoding="utf-8") == first
    assert "made-by-the-demo-meanwhile" in {bucket["Name"] for bucket in emulator.client("s3").list_buckets()["Buckets"]}

    emulator.reset()  # the emulator's container was re-created: its state is gone, the volume's files are not
    assert compose_demo.seed(emulator.endpoint_url, **folders) is True
    arn = yaml.safe_load(config.read_text(encoding="utf-8"))["policy"]["identity_center"]["instance_arn"]
    assert arn == emulator.client("sso-admin").list_instances()["Instances"][0]["InstanceArn"]
    assert arn != yaml.safe_load(first)["policy"]["identity_center"]["instance_arn"]


def test_the_overlay_s_connection_reaches_the_emulator_through_airflow(
    emulator: AwsEmulator, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    emulator.reset()
    compose_demo.seed(emulator.endpoint_url, **folders)
    env = read_env(folders["folder"] / compose_demo.OVERLAY_FILE)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", env["AIRFLOW_CONN_AWS_DEFAULT"])
    sso = AwsBaseHook(aws_conn_id="aws_default", client_type="sso-admin").get_conn()
    named = yaml.safe_load(Path(env["ELEVATION_CONFIG"]).read_text(encoding="utf-8"))["policy"]["identity_center"]
    assert sso.list_instances()["Instances"][0]["InstanceArn"] == named["instance_arn"]


@pytest.fixture
def served() -> Iterator[int]:
    """compose_demo.serve on 0.0.0.0 (as in its container) in a thread; stopped afterwards."""
    port, stop, ready = _free_port(), threading.Event(), threading.Event()
    thread = threading.Thread(target=compose_demo.serve, args=("0.0.0.0", port),  # noqa: S104
                              kwargs={"stop": stop, "ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(30), "the emulator did not start"
    yield port
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_serve_answers_by_a_host_name_as_other_containers_call_it(served: int) -> None:
    """A compose service name has no dot (`aws-emulator`): moto must read the host as no bucket (path-style S3)."""
    host = socket.gethostname()
    try:
        socket.getaddrinfo(host, served)
    except OSError:
        pytest.skip(f"this machine's host name {host!r} does not resolve")
    if "." in host:
        pytest.skip(f"this machine's host name {host!r} is not a single label like a compose service name")
    assert emulator_module.LOOPBACK == "127.0.0.1", "serve must put the emulator's loopback address back"
    url = f"http://{host}:{served}"
    with urllib.request.urlopen(f"{url}/_emulator/status", timeout=10) as answer:
        assert answer.status == 200 and json.loads(answer.read())["region"] == "us-east-1"
    s3 = compose_demo.RemoteEmulator(url).client("s3")
    bucket = "compose-demo-serve-check"
    s3.create_bucket(Bucket=bucket)
    try:
        s3.put_object(Bucket=bucket, Key="AWSLogs/o-x/123456789012/CloudTrail/x.json.gz", Body=b"{}")
        assert [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [
            "AWSLogs/o-x/123456789012/CloudTrail/x.json.gz"]
    finally:
        s3.delete_object(Bucket=bucket, Key="AWSLogs/o-x/123456789012/CloudTrail/x.json.gz")
        s3.delete_bucket(Bucket=bucket)


def test_the_command_line_seeds(emulator: AwsEmulator, folders: dict[str, Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    emulator.reset()
    argv = ["seed", "--endpoint-url", emulator.endpoint_url, "--dir", str(folders["folder"]),
            "--data-dir", str(folders["data_dir"]), "--reports-dir", str(folders["reports_dir"])]
    assert compose_demo.main(argv) == 0
    assert "demo organization built" in capsys.readouterr().out
    assert compose_demo.main(argv) == 0
    assert "left as it is" in capsys.readouterr().out
