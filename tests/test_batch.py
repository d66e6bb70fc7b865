"""AWS Batch job definitions: built, validated, and registered against moto's in-process mock."""
from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from genostage.deploy import batch
from genostage.cli import main
from genostage.errors import UsageError


def test_samtools_definition_runs_genostage_with_ref_placeholders() -> None:
    d = batch.job_definition("samtools", "1.dkr/genostage/samtools:1.16.1", vcpus=2, memory=4096, timeout=3600)
    c = d["containerProperties"]
    assert c["command"] == ["-i", "Ref::bam", "-o", "Ref::stats", "--stdout", "stats", "--",
                            "samtools", "stats", "{bam}"]
    assert {"type": "VCPU", "value": "2"} in c["resourceRequirements"]
    assert {"type": "MEMORY", "value": "4096"} in c["resourceRequirements"]
    assert c["mountPoints"] == [{"sourceVolume": "scratch", "containerPath": "/scratch", "readOnly": False}]
    assert c["volumes"] == [{"name": "scratch", "host": {"sourcePath": "/scratch"}}]
    assert {"name": "GENOSTAGE_SCRATCH", "value": "/scratch"} in c["environment"]
    assert d["timeout"] == {"attemptDurationSeconds": 3600}
    rules = d["retryStrategy"]["evaluateOnExit"]
    assert rules[0] == {"onStatusReason": "Host EC2*", "action": "RETRY"}
    assert rules[-1] == {"onReason": "*", "action": "EXIT"}
    assert d["retryStrategy"]["attempts"] == 3


def test_every_placeholder_is_a_whole_argument() -> None:
    for tool, template in batch.TEMPLATES.items():
        command = batch.job_definition(tool, "img", 1, 512)["containerProperties"]["command"]
        refs = [a for a in command if "Ref::" in a]
        assert refs == [f"Ref::{p}" for p in template.parameters()], tool
        head = command[:command.index("--")]
        for name in template.inputs + template.outputs:
            assert head[head.index(f"Ref::{name}") - 1] in ("-i", "-o")


@pytest.mark.parametrize("kwargs, message", [
    ({"vcpus": 0}, "--vcpus"),
    ({"memory": 2}, "--memory"),
    ({"attempts": 11}, "--attempts"),
    ({"attempts": 0}, "--attempts"),
    ({"timeout": 59}, "--timeout"),
    ({"host_scratch": "scratch"}, "--host-scratch"),
    ({"name": "bad name"}, "job definition name"),
])
def test_bad_values_are_refused(kwargs: dict, message: str) -> None:
    args = {"vcpus": 2, "memory": 1024, **kwargs}
    with pytest.raises(UsageError, match=message):
        batch.job_definition("samtools", "img", **args)


def test_unknown_tool_needs_a_command() -> None:
    with pytest.raises(UsageError, match="no job template"):
        batch.job_definition("fastqc", "img", 1, 512)
    d = batch.job_definition("fastqc", "img", 1, 512, command=["-i", "Ref::fq", "--", "fastqc", "{fq}"])
    assert d["containerProperties"]["command"][-1] == "{fq}"


@mock_aws
def test_register_with_batch() -> None:
    client = boto3.client("batch", region_name="us-east-1")
    d = batch.job_definition("samtools", "123456789012.dkr.ecr.us-east-1.amazonaws.com/genostage/samtools:1.16.1",
                             vcpus=2, memory=4096, timeout=600, attempts=4)
    first = batch.register(d, client=client)
    second = batch.register(d, client=client)
    assert first["jobDefinitionName"] == "genostage-samtools"
    assert (first["revision"], second["revision"]) == (1, 2)
    described = client.describe_job_definitions(jobDefinitionName="genostage-samtools", status="ACTIVE")
    got = {j["revision"]: j for j in described["jobDefinitions"]}[1]
    assert got["containerProperties"]["command"] == d["containerProperties"]["command"]
    assert got["containerProperties"]["image"] == d["containerProperties"]["image"]
    assert got["retryStrategy"]["attempts"] == 4
    assert got["timeout"] == {"attemptDurationSeconds": 600}


@mock_aws
def test_cli_registers_and_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "job-definition", "bwa", "--vcpus", "4", "--memory", "8192", "--register",
                 "--image", "123456789012.dkr.ecr.us-east-1.amazonaws.com/genostage/bwa:0.7.17",
                 "--region", "us-east-1", "--name", "bwa-mem"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["jobDefinitionName"] == "bwa-mem" and reply["revision"] == 1
    assert ":job-definition/bwa-mem:1" in reply["jobDefinitionArn"]


def test_cli_prints_json_and_maps_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "job-definition", "bcftools", "--vcpus", "1", "--memory", "2048",
                 "--image", "img:1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["containerProperties"]["command"][-3:] == ["bcftools", "stats", "{vcf}"]
    assert main(["batch", "job-definition", "samtools", "--vcpus", "1", "--memory", "2048", "--register"]) == 2
    assert "--register needs --image" in capsys.readouterr().err
    assert main(["batch", "job-definition", "x", "--vcpus", "1", "--memory", "64", "--image", "i",
                 "--command-json", "{}"]) == 2
