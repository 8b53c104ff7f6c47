"""deploy/ stays in step with the code: manifests, Prometheus config and the
Grafana dashboard parse; every metric the alert rules and dashboard query is
one the C++ code registers; every flag the manifests pass is defined by some
binary."""
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
        kinds = set()
        for path in glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml")):
            with open(path) as f:
                for doc in yaml.safe_load_all(f):
                    kinds.add((doc["kind"], doc["metadata"]["name"]))
                    if doc["kind"] == "Service" and doc["metadata"]["name"] in (
                            "arbor-worker", "arbor-verifier"):
                        self.assertEqual(doc["spec"]["clusterIP"], "None", path)
                    if doc["kind"] != "Deployment":
                        continue
                    for container in doc["spec"]["template"]["spec"]["containers"]:
                        for arg in container.get("args", []):
                            flag = re.match(r"--([a-z_]+)", arg).group(1)
                            self.assertRegex(self.source, r"ABSL_FLAG\([^,]+, %s," % flag,
                                             "%s passes unknown flag --%s" % (path, flag))
        for role in ["arbor-coordinator", "arbor-worker", "arbor-verifier"]:
            self.assertIn(("Deployment", role), kinds)
            self.assertIn(("Service", role), kinds)

    @unittest.skipIf(yaml is None, "python3-yaml is not installed")
    def test_alert_rules_use_exported_metrics(self):
        with open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")) as f:
            config = yaml.safe_load(f)
        self.assertTrue(config["scrape_configs"])
        with open(os.path.join(DEPLOY, "prometheus", "arbor_alerts.yml")) as f:
            rules = yaml.safe_load(f)
        count = 0
        for group in rules["groups"]:
            for rule in group["rules"]:
                count += 1
                for name in metric_names(rule["expr"]):
                    self.assertTrue(self.registered(name), "%s: %s" % (rule["alert"], name))
        self.assertGreater(count, 5)

    def test_dashboard_uses_exported_metrics(self):
        with open(os.path.join(DEPLOY, "grafana", "arbor_dashboard.json")) as f:
            dashboard = json.load(f)
        self.assertGreater(len(dashboard["panels"]), 10)
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                for name in metric_names(target["expr"]):
                    self.assertTrue(self.registered(name), "%s: %s" % (panel["title"], name))


if __name__ == "__main__":
    unittest.main(verbosity=2)
