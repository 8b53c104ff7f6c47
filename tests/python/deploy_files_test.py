"""deploy/ stays in step with the code: manifests, Prometheus config and the
Grafana dashboard parse; every metric the rules and dashboard query is one the
C++ code registers; every flag the manifests pass is defined by some binary;
the container images build binaries that are CMake targets and run as the
user the manifests ask for. (deploy_k8s_test.py renders and validates the
kustomizations, deploy_rules_test.py runs promtool,
prometheus_integration_test.py a real Prometheus.)"""
import glob
import json
import os
import re
import unittest

try:
    import yaml  # Debian python3-yaml
except ImportError:  # pragma: no cover
    yaml = None

SOURCE_DIR = os.environ.get(
    "ARBOR_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
DEPLOY = os.path.join(SOURCE_DIR, "deploy")


def source_text():
    text = []
    for folder in ["rpc", "serving", "coordinator", "worker", "verifier"]:
        for path in glob.glob(os.path.join(SOURCE_DIR, folder, "**", "*.cc"), recursive=True):
            with open(path, encoding="utf-8") as f:
                text.append(f.read())
    return "\n".join(text)


def metric_names(expr):
    names = set(re.findall(r"\b(arbor_[a-z_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


class DeployFilesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.source = source_text()

    def registered(self, name):
        return ('"%s"' % name) in self.source

    @unittest.skipIf(yaml is None, "python3-yaml is not installed")
    def test_manifests_parse_and_flags_exist(self):
        # The base and every overlay's patches (deploy_k8s_test.py renders them).
        kinds = set()
        paths = glob.glob(os.path.join(DEPLOY, "k8s", "**", "*.yaml"), recursive=True)
        self.assertGreater(len(paths), 10)
        for path in paths:
            with open(path) as f:
                for doc in yaml.safe_load_all(f):
                    if doc is None or doc.get("kind") == "Kustomization":
                        continue
                    kinds.add((doc["kind"], doc["metadata"]["name"]))
                    if doc["kind"] == "Service":
                        self.assertEqual(doc["spec"]["clusterIP"], "None", path)
                    if doc["kind"] != "Deployment":
                        continue
                    pod = doc["spec"].get("template", {}).get("spec", {})
                    for container in pod.get("containers", []) + pod.get("initContainers", []):
                        for arg in container.get("args", []):
                            flag = re.match(r"--([a-z_]+)", arg).group(1)
                            self.assertRegex(self.source, r"ABSL_FLAG\([^,]+, %s," % flag,
                                             "%s passes unknown flag --%s" % (path, flag))
        for role in ["arbor-coordinator", "arbor-worker", "arbor-verifier"]:
            self.assertIn(("Deployment", role), kinds)
            self.assertIn(("Service", role), kinds)
            self.assertIn(("PodDisruptionBudget", role), kinds)

    @unittest.skipIf(yaml is None, "python3-yaml is not installed")
    def test_alert_rules_use_exported_metrics(self):
        with open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")) as f:
            config = yaml.safe_load(f)
        self.assertTrue(config["scrape_configs"])
        with open(os.path.join(DEPLOY, "prometheus", "arbor_rules.yml")) as f:
            rules = yaml.safe_load(f)
        count = 0
        for group in rules["groups"]:
            for rule in group["rules"]:
                count += 1
                name_of_rule = rule.get("alert") or rule.get("record")
                for name in metric_names(rule["expr"]):
                    self.assertTrue(self.registered(name), "%s: %s" % (name_of_rule, name))
        self.assertGreater(count, 5)

    def test_dashboard_uses_exported_metrics(self):
        with open(os.path.join(DEPLOY, "grafana", "arbor_dashboard.json")) as f:
            dashboard = json.load(f)
        self.assertGreater(len(dashboard["panels"]), 10)
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                for name in metric_names(target["expr"]):
                    self.assertTrue(self.registered(name), "%s: %s" % (panel["title"], name))
                # state="total" is the pool, not a part: never add it to the others.
                for use in re.findall(r"arbor_engine_kv_blocks(\{[^}]*\})?", target["expr"]):
                    self.assertIn("state=", use, "%s sums every KV state" % panel["title"])

    def test_images_build_cmake_targets_and_run_unprivileged(self):
        targets = set()
        for path in glob.glob(os.path.join(SOURCE_DIR, "**", "CMakeLists.txt"), recursive=True):
            if os.path.relpath(path, SOURCE_DIR).startswith("build"):
                continue
            with open(path) as f:
                targets |= set(re.findall(r"add_executable\(([A-Za-z0-9_-]+)", f.read()))
        docker = os.path.join(DEPLOY, "docker")
        with open(os.path.join(docker, "collect_runtime.sh")) as f:
            collected = re.search(r"binaries=\(([^)]*)\)", f.read()).group(1).split()
        self.assertEqual(len(collected), 5)
        for binary in collected:
            self.assertIn(binary, targets, "collect_runtime.sh copies %s, not a CMake target" % binary)
        with open(os.path.join(docker, "build.sh")) as f:
            build = f.read()
        for name in ["cpu.Dockerfile", "gpu.Dockerfile"]:
            with open(os.path.join(docker, name)) as f:
                text = f.read()
            self.assertIn(name, build)
            stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
            names = {s[1] for s in stages}
            self.assertIn("runtime", names, name)
            for target in re.findall(r"build %s (\S+)" % re.escape(name), build):
                self.assertIn(target, names, "build.sh builds %s --target %s" % (name, target))
            built = re.search(r"--target ([^&]+)&&", text).group(1).split()
            self.assertEqual(sorted(built), sorted(collected), name)
            for b in built:
                self.assertIn(b, targets, name)
            # The final stages hold what the build stage collected, not the sources.
            final = text[text.index(" AS runtime"):]
            for copy in re.findall(r"^COPY (.*)$", final, re.M):
                self.assertTrue("--from=build" in copy or copy.split()[-1] == "/opt/arbor/models/",
                                "%s copies %s into a final stage" % (name, copy))
            users = re.findall(r"^USER (\d+):(\d+)$", final, re.M)
            self.assertEqual(users, [("10001", "10001")], name)
        with open(os.path.join(docker, "gpu.Dockerfile")) as f:
            gpu = f.read()
        self.assertIn("-DARBOR_CUDA=ON", gpu)
        self.assertRegex(gpu, r"FROM nvidia/cuda:\$\{CUDA_VERSION\}-devel-\S+ AS build")
        self.assertRegex(gpu, r"FROM nvidia/cuda:\$\{CUDA_VERSION\}-runtime-\S+ AS runtime")
        self.assertFalse(os.path.exists(os.path.join(DEPLOY, "Dockerfile")))
        self.assertTrue(os.path.exists(os.path.join(SOURCE_DIR, ".dockerignore")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
