"""Fast checks of the Prefect layer: the stage graph comes from DVC, overrides are applied the DVC way,
and the deployments (prefect.yaml, deploy/k8s-gpu-job-template.json) are what the workers expect.
Runs of the flows themselves are in test_flows_runs.py."""
import json
import os
from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.server.schemas.actions import WorkPoolCreate
from prefect.utilities.schema_tools import validate
from prefect.utilities.templating import apply_values

from flows.pipeline import apply_params, read_stages
from tests.conftest import REPO

DEPLOYMENTS = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
K8S_TEMPLATE = json.loads((REPO / "deploy/k8s-gpu-job-template.json").read_text())


def render(template: dict, job_variables: dict) -> dict:
    """The job configuration a worker builds for a flow run: variable defaults, overridden by the deployment's, put into the template."""
    defaults = {name: spec["default"] for name, spec in template["variables"]["properties"].items() if spec.get("default") is not None}
    return apply_values(template["job_configuration"], defaults | job_variables)


def deployed_job_variables(name: str, monkeypatch) -> dict:
    """A deployment's job variables as `prefect deploy` resolves them, with PLUGEN_IMAGE set."""
    monkeypatch.setenv("PLUGEN_IMAGE", "registry.example.com/plugen:test")
    return apply_values(DEPLOYMENTS[name]["work_pool"]["job_variables"], {})


def test_stage_graph_comes_from_dvc_yaml(repo_copy):
    stages = {s.name: s for s in read_stages(repo_copy)}
    templates = list(yaml.safe_load((repo_copy / "dvc.yaml").read_text())["stages"])  # in dependency order
    assert list(stages) == [f"{t}@shapes" if t in ("data", "train_judge") else f"{t}@shapes-vae" for t in templates]
    assert set(stages["evaluate@shapes-vae"].upstream) == {"data@shapes", "backbone@shapes-vae", "train_judge@shapes", "train_flow@shapes-vae", "extract_latents@shapes-vae", "align_labels@shapes-vae"}
    assert {name for name, s in stages.items() if s.gpu} == {"backbone@shapes-vae", "train_judge@shapes", "train_flow@shapes-vae"}
    assert "metrics/shapes-vae/metrics.json" in stages["evaluate@shapes-vae"].git_outs


def test_targets_bring_their_upstream_and_unknown_ones_are_named(repo_copy):
    assert [s.name for s in read_stages(repo_copy, ["train_flow@shapes-vae"])] == [
        "data@shapes", "backbone@shapes-vae", "extract_latents@shapes-vae", "align_labels@shapes-vae", "train_flow@shapes-vae"
    ]
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['trian_flow'\]"):
        read_stages(repo_copy, ["trian_flow"])
    benchmark = [s.name for s in read_stages(repo_copy, ["reports/dvc.yaml:report"])]  # the benchmark, asked for by name
    assert benchmark[-2:] == ["reports/dvc.yaml:baselines@shapes-vae", "reports/dvc.yaml:report"] and "evaluate@shapes-vae" in benchmark


def test_overrides_are_written_as_dvc_exp_run_set_param_does(repo_copy):
    apply_params(repo_copy, {"flow.epochs": 5, "flow.sigma_min": "0.15", "device": "cpu", "flow.balanced": False,
                             "datasets.shapes.labelled.held_out": [{"shape": "circle", "hollow": 1}], "experiments.shapes-vae.backbone.beta": 0.5})
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    assert (params["flow"]["epochs"], params["flow"]["sigma_min"], params["device"], params["flow"]["balanced"]) == (5, 0.15, "cpu", False)
    assert params["datasets"]["shapes"]["labelled"]["held_out"] == [{"shape": "circle", "hollow": 1}]
    assert params["experiments"]["shapes-vae"]["backbone"]["beta"] == 0.5
    with pytest.raises(ValueError, match="Could not override 'flow.nope'"):
        apply_params(repo_copy, {"flow.nope": 1})


def test_every_deployment_runs_the_pipeline_flow():
    assert set(DEPLOYMENTS) == {"local", "gpu-docker", "gpu-k8s"}
    (entrypoint,) = {d["entrypoint"] for d in DEPLOYMENTS.values()}
    assert load_flow_from_entrypoint(str(REPO / entrypoint)).name == "plugen-pipeline"
    assert DEPLOYMENTS["local"]["concurrency_limit"] == 1  # one workspace, one `dvc repro` at a time
    assert DEPLOYMENTS["gpu-docker"]["parameters"]["device"] == DEPLOYMENTS["gpu-k8s"]["parameters"]["device"] == "cuda"


def test_docker_deployment_requests_nvidia_gpus_and_the_project_image(monkeypatch):
    job_variables = deployed_job_variables("gpu-docker", monkeypatch)
    assert job_variables["image"] == "registry.example.com/plugen:test"
    (request,) = job_variables["container_create_kwargs"]["device_requests"]
    assert request == {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}


def test_docker_worker_hands_the_gpu_request_to_docker(monkeypatch):
    docker_types = pytest.importorskip("docker.types")
    worker = pytest.importorskip("prefect_docker.worker")
    template = worker.DockerWorker.get_default_base_job_template()
    job_variables = deployed_job_variables("gpu-docker", monkeypatch)
    validate(job_variables, template["variables"], raise_on_error=True, ignore_required=True)
    config = worker.DockerWorkerJobConfiguration(**render(template, job_variables))
    host_config = docker_types.HostConfig(version="1.44", device_requests=config.container_create_kwargs["device_requests"])
    assert host_config["DeviceRequests"][0]["Driver"] == "nvidia"
    assert config.image == "registry.example.com/plugen:test"


def test_k8s_template_maps_gpu_count_to_nvidia_gpu_limits(monkeypatch):
    WorkPoolCreate(name="plugen-gpu-k8s", type="kubernetes", base_job_template=K8S_TEMPLATE)  # the server's own check
    job_variables = deployed_job_variables("gpu-k8s", monkeypatch)
    validate(job_variables, K8S_TEMPLATE["variables"], raise_on_error=True, ignore_required=True)
    for gpus in (1, 4):
        pod = render(K8S_TEMPLATE, job_variables | {"gpu_count": gpus})["job_manifest"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": gpus}
        assert pod["containers"][0]["image"] == "registry.example.com/plugen:test"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_k8s_worker_accepts_the_rendered_job(monkeypatch):
    worker = pytest.importorskip("prefect_kubernetes.worker")
    config = worker.KubernetesWorkerJobConfiguration(**render(K8S_TEMPLATE, deployed_job_variables("gpu-k8s", monkeypatch)))
    assert config.job_manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}


def test_sweep_compares_the_experiments_metrics_by_file(tmp_path):
    """The comparison reads each experiment's swept params and metrics from DVC's experiments, the workspace never
    having run, and prefixes a key two metrics files share with the file, as `dvc exp show` does."""
    import subprocess
    import sys

    from flows.sweep import compare

    (tmp_path / "params.yaml").write_text("lr: 1\nnested: {depth: 2}\n")
    cmd = "python -c \"import yaml, json; p = yaml.safe_load(open('params.yaml')); [json.dump({'score': p['lr'] * k, 'own_%s' % k: k}, open('m/%s.json' % k, 'w')) for k in (1, 2)]\""
    stage = {"cmd": cmd, "params": ["lr", "nested"], "metrics": [{"m/1.json": {"cache": False}}, {"m/2.json": {"cache": False}}]}
    (tmp_path / "m").mkdir()
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"score": stage}}))
    (tmp_path / "report").mkdir()  # like reports/dvc.yaml: a pipeline beside it that reads the metrics folder
    (tmp_path / "report/dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": {"wdir": "..", "cmd": "ls m", "deps": ["m"]}}}))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for args in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "x"]):
        subprocess.run(args, cwd=tmp_path, check=True, env=env)
    for name, lr in (("a", 3), ("b", 5)):
        subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-q", "--name", name, "-S", f"lr={lr}"], cwd=tmp_path, check=True, env=env, capture_output=True)
    table = compare(str(tmp_path), ["a", "b"], ["lr", "nested.depth"])
    assert list(table.index) == ["a", "b"] and list(table["lr"]) == [3, 5] and list(table["nested.depth"]) == [2, 2]
    assert list(table["m/1.json:score"]) == [3, 5] and list(table["m/2.json:score"]) == [6, 10] and list(table["own_2"]) == [2, 2]


def test_label_efficiency_reads_each_method_from_a_sweeps_table():
    """A sweep's comparison (keys as `dvc exp show` names them, this experiment's files' prefixes included) becomes a
    row per method and point; another experiment's prefixed key is never taken for this one's."""
    import pandas as pd

    from flows.label_efficiency import long_table

    size = "datasets.shapes.labelled.count"
    table = pd.DataFrame({size: [100, 200], "seed": [0, 1],
                          "metrics/shapes-vae/metrics.json:generation.unseen.joint": [0.5, 0.6], "manipulation.joint": [0.3, 0.4],
                          "metrics/shapes-gan/metrics.json:generation.seen.joint": [0.9, 0.9],
                          "baselines.lace.generation.unseen.joint": [0.2, 0.25], "baselines.lace.manipulation.joint": [0.1, 0.15]}, index=["a", "b"])
    rows = long_table(table, "shapes-vae", size, unlabelled=True, baselines=True).set_index(["method", "labelled"])
    assert rows.loc[("plugen", 100), "generation.unseen.joint"] == 0.5 and rows.loc[("plugen", 200), "manipulation.joint"] == 0.4
    assert rows.loc[("lace", 200), "generation.unseen.joint"] == 0.25 and rows.loc[("lace", 100), "seed"] == 0
    assert rows["generation.seen.joint"].isna().all() and rows["unlabelled"].all()
    alone = long_table(table, "shapes-vae", size, unlabelled=False, baselines=False)
    assert list(alone["method"]) == ["plugen", "plugen"] and not alone["unlabelled"].any()


def test_label_efficiency_refuses_a_size_that_is_not_a_number(capsys):
    from flows.label_efficiency import main

    with pytest.raises(SystemExit) as exit:
        main(["--sizes", "100,abc"])
    assert exit.value.code == 2 and "'100,abc': comma-separated whole numbers >= 0" in capsys.readouterr().err
