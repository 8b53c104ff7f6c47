"""The Prometheus rules with Prometheus' own tool: `promtool check rules` and
`promtool check config` accept deploy/prometheus, `promtool test rules` passes
arbor_rules_test.yml, whose cases fire every alert of arbor_rules.yml; the
Prometheus Operator's PrometheusRule carries the same groups.
Exits 77 (CTest SKIP_RETURN_CODE) when promtool is missing."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml  # Debian python3-yaml

SOURCE_DIR = os.environ.get(
    "ARBOR_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
PROMETHEUS_DIR = os.path.join(SOURCE_DIR, "deploy", "prometheus")
PROMTOOL = shutil.which("promtool")


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def promtool(*args, cwd=PROMETHEUS_DIR):
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


class DeployRulesTest(unittest.TestCase):
    def test_check_rules(self):
        result = promtool("check", "rules", "arbor_rules.yml")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SUCCESS", result.stdout)

    def test_check_config(self):
        # prometheus.yml names the rules at their in-cluster path.
        config = load(os.path.join(PROMETHEUS_DIR, "prometheus.yml"))
        self.assertEqual(config["rule_files"], ["/etc/prometheus/arbor_rules.yml"])
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(os.path.join(PROMETHEUS_DIR, "arbor_rules.yml"), tmp)
            config["rule_files"] = [os.path.join(tmp, "arbor_rules.yml")]
            result = self.check_config(tmp, config)
            if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
                # Debian builds Prometheus without Kubernetes service discovery:
                # check the rest (relabelings, intervals, rules) with a static
                # target in its place.
                for scrape in config["scrape_configs"]:
                    scrape.pop("kubernetes_sd_configs")
                    scrape["static_configs"] = [{"targets": ["127.0.0.1:9090"]}]
                result = self.check_config(tmp, config)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    @staticmethod
    def check_config(tmp, config):
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            yaml.safe_dump(config, f)
        return promtool("check", "config", "prometheus.yml", cwd=tmp)

    def test_rule_unit_tests_fire_every_alert(self):
        result = promtool("test", "rules", "arbor_rules_test.yml")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SUCCESS", result.stdout)
        alerts = {rule["alert"] for group in load(os.path.join(PROMETHEUS_DIR, "arbor_rules.yml"))
                  ["groups"] for rule in group["rules"] if "alert" in rule}
        fired = set()
        for test in load(os.path.join(PROMETHEUS_DIR, "arbor_rules_test.yml"))["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fired.add(case["alertname"])
        self.assertEqual(alerts - fired, set(), "alerts no test case fires")
        self.assertGreater(len(alerts), 10)

    def test_operator_rules_match_plain_rules(self):
        plain = load(os.path.join(PROMETHEUS_DIR, "arbor_rules.yml"))["groups"]
        operator = load(os.path.join(SOURCE_DIR, "deploy", "k8s", "monitoring",
                                     "prometheusrule.yaml"))
        self.assertEqual(operator["kind"], "PrometheusRule")
        self.assertEqual(operator["spec"]["groups"], plain,
                         "run deploy/k8s/monitoring/update_rules.py")


if __name__ == "__main__":
    if PROMTOOL is None:
        print("SKIP: promtool is not installed (Debian: apt-get install prometheus)")
        sys.exit(77)
    unittest.main(verbosity=2)
