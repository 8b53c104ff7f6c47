"""A real Prometheus (Debian's `prometheus`) on loopback scrapes a running
arbor-coordinator, arbor-worker and arbor-verifier (the bundled models) and
loads deploy/prometheus/arbor_rules.yml; after a few jobs, every expression of
the Grafana dashboard, every recording rule and every alert (its expression
without the threshold) evaluates through the HTTP API to a non-empty result,
so no panel or alert selects a series the code does not export.
Exits 77 (CTest SKIP_RETURN_CODE) when the prometheus binary is missing."""
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

SOURCE_DIR = os.environ.get(
    "ARBOR_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BINARY_DIR = os.environ.get("ARBOR_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
BIN = os.path.join(BINARY_DIR, "bin")
PROMETHEUS = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)
SKIP = 77

try:
    import yaml  # Debian python3-yaml
except ImportError:  # pragma: no cover
    yaml = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A binary started with --port 0 --metrics_port 0 on loopback; reads its
    announced ports ("listening on", "metrics on")."""

    def __init__(self, name, args):
        self.name = name
        self.proc = subprocess.Popen(
            [os.path.join(BIN, name), "--host=127.0.0.1", "--port=0",
             "--metrics_host=127.0.0.1", "--metrics_port=0", "--drain_grace_ms=2000", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=SOURCE_DIR)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in self.proc.stdout],
                         daemon=True).start()
        self.stderr = []
        threading.Thread(target=lambda: [self.stderr.append(l) for l in self.proc.stderr],
                         daemon=True).start()
        self.address = self.metrics = None
        deadline = time.time() + 60
        while (self.address is None or self.metrics is None) and time.time() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line.startswith("listening on "):
                self.address = line.split()[-1]
            elif line.startswith("metrics on "):
                self.metrics = line.split()[-1]
        if self.address is None or self.metrics is None:
            self.stop()
            raise RuntimeError("%s did not start: %s" % (name, "".join(self.stderr[-20:])))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def strip_threshold(expr):
    """The alert expression without its final comparison with a constant."""
    m = re.match(r"^(.*\S)\s*(?:==|!=|>=|<=|>|<)\s*[-0-9.eE+*\s]+$", expr.strip(), re.S)
    return m.group(1) if m else expr


def dashboard_exprs():
    with open(os.path.join(SOURCE_DIR, "deploy", "grafana", "arbor_dashboard.json")) as f:
        dashboard = json.load(f)
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            # What Grafana substitutes: the rate window and the model variable (All).
            expr = target["expr"].replace("$__rate_interval", "30s").replace("$model", ".*")
            yield panel["title"], expr


@unittest.skipIf(yaml is None, "python3-yaml is not installed")
class PrometheusIntegrationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="arbor_prometheus_")
        cls.procs = []
        try:
            cls.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def start(cls):
        worker = Process("arbor-worker", ["--model=models/policy", "--threads=2"])
        cls.procs.append(worker)
        verifier = Process("arbor-verifier", ["--model=models/prm", "--threads=2"])
        cls.procs.append(verifier)
        coordinator = Process("arbor-coordinator", [
            "--workers=" + worker.address, "--verifiers=" + verifier.address,
            "--health_interval_ms=200"])
        cls.procs.append(coordinator)
        cls.coordinator = coordinator
        targets = [(coordinator, "coordinator"), (worker, "worker"), (verifier, "verifier")]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [os.path.join(SOURCE_DIR, "deploy", "prometheus", "arbor_rules.yml")],
            "scrape_configs": [{
                "job_name": "arbor",
                "static_configs": [
                    {"targets": [p.metrics], "labels": {"component": c, "pod": "arbor-" + c}}
                    for p, c in targets],
            }],
        }
        config_path = os.path.join(cls.tmp, "prometheus.yml")
        with open(config_path, "w") as f:
            yaml.safe_dump(config, f)
        port = free_port()
        cls.api = "http://127.0.0.1:%d" % port
        cls.prometheus_log = open(os.path.join(cls.tmp, "prometheus.log"), "w")
        cls.prometheus = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + config_path,
             "--storage.tsdb.path=" + os.path.join(cls.tmp, "data"),
             "--web.listen-address=127.0.0.1:%d" % port],
            stdout=cls.prometheus_log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                active = cls.get("/api/v1/targets")["data"]["activeTargets"]
                if len(active) == 3 and all(t["health"] == "up" for t in active):
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("Prometheus did not scrape all three targets: see "
                               + cls.prometheus_log.name)
        # Jobs of a tree strategy and a sampling one: every job, step, token,
        # reward and engine series moves.
        for strategy, extra in [("beam_search", ["--n=4", "--beam_width=2", "--iterations=3"]),
                                ("best_of_n", ["--n=4"])]:
            for question in ["Start with 5. Add 3. What is the result?",
                             "Start with 9. Subtract 4. What is the result?"]:
                result = subprocess.run(
                    [os.path.join(BIN, "arborctl"), "solve", "--target=" + coordinator.address,
                     "--strategy=" + strategy, "--stream=false", "--json",
                     "--max_step_tokens=32", "--timeout_ms=60000", *extra, question],
                    capture_output=True, text=True, timeout=90)
                if result.returncode != 0:
                    raise RuntimeError("arborctl solve failed: " + result.stderr)
        # Two scrapes and rule evaluations after the last job.
        time.sleep(4)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "prometheus", None) is not None:
            cls.prometheus.terminate()
            try:
                cls.prometheus.wait(timeout=20)
            except subprocess.TimeoutExpired:
                cls.prometheus.kill()
        for p in reversed(cls.procs):
            p.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def get(cls, path, **params):
        url = cls.api + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as reply:
            return json.load(reply)

    def query(self, expr):
        reply = self.get("/api/v1/query", query=expr)
        self.assertEqual(reply["status"], "success", expr)
        return reply["data"]["result"]

    def value(self, expr):
        result = self.query(expr)
        self.assertEqual(len(result), 1, expr)
        return float(result[0]["value"][1])

    def test_jobs_ran_and_engine_histograms_moved(self):
        self.assertGreater(self.value('sum(arbor_coordinator_jobs_total{outcome="ok"})'), 0)
        self.assertGreater(self.value(
            'sum(arbor_engine_time_to_first_token_seconds_count{role="worker"})'), 0)
        self.assertGreater(self.value(
            'sum(arbor_engine_inter_token_seconds_count{role="worker"})'), 0)
        self.assertEqual(self.value("count(arbor_build_info)"), 3)
        self.assertEqual(self.value('count(up{job="arbor"} == 1)'), 3)
        self.assertGreater(self.value("min(process_resident_memory_bytes)"), 1 << 20)
        # The model label names the served models.
        models = {r["metric"].get("model") for r in self.query("arbor_engine_kv_blocks")}
        self.assertEqual(models, {"policy", "prm"})

    def test_every_dashboard_expression_has_data(self):
        count = 0
        for title, expr in dashboard_exprs():
            count += 1
            self.assertTrue(self.query(expr), "dashboard panel %r: %s is empty" % (title, expr))
        self.assertGreater(count, 25)

    def test_every_rule_expression_has_data(self):
        with open(os.path.join(SOURCE_DIR, "deploy", "prometheus", "arbor_rules.yml")) as f:
            groups = yaml.safe_load(f)["groups"]
        alerts = 0
        for group in groups:
            for rule in group["rules"]:
                if "record" in rule:
                    self.assertTrue(self.query(rule["expr"]), rule["record"])
                    self.assertTrue(self.query(rule["record"]),
                                    "recorded series %s is missing" % rule["record"])
                else:
                    alerts += 1
                    expr = strip_threshold(rule["expr"])
                    self.assertNotEqual(expr, rule["expr"].strip(), rule["alert"])
                    self.assertTrue(self.query(expr), "alert %s: %s is empty" % (rule["alert"], expr))
        self.assertGreater(alerts, 10)
        # Healthy services fire nothing (pending or firing).
        self.assertEqual(self.get("/api/v1/alerts")["data"]["alerts"], [])


if __name__ == "__main__":
    if PROMETHEUS is None:
        print("SKIP: the prometheus binary is not installed (Debian: apt-get install prometheus)")
        sys.exit(SKIP)
    unittest.main(verbosity=2)
