"""The Python client against a coordinator that serves TLS and requires a
bearer token (arbor_client.tls_credentials, Client(token=...)), with
certificates made at test time by tests/integration/make_test_certs.sh."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get(
    "ARBOR_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BINARY_DIR = os.environ.get("ARBOR_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python"))

from arbor_client import (Client, UnauthenticatedError, UnavailableError,  # noqa: E402
                          tls_credentials)


def binary(name):
    return os.path.join(BINARY_DIR, "bin", name)


def start_server(argv):
    env = dict(os.environ, ARBOR_LOG_LEVEL="WARNING")
    process = subprocess.Popen(argv + ["--port=0", "--host=127.0.0.1", "--metrics_port=-1"],
                               stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.match(r"listening on (\S+)", line)
        if match:
            return process, match.group(1)
    process.kill()
    raise RuntimeError("%s did not start" % argv[0])


class SecureClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("openssl not installed")
        cls.dir = tempfile.mkdtemp(prefix="arbor_pki_")
        subprocess.run([os.path.join(SOURCE_DIR, "tests", "integration", "make_test_certs.sh"),
                        cls.dir], check=True, stdout=subprocess.DEVNULL)
        tokens = os.path.join(cls.dir, "tokens")
        with open(tokens, "w") as f:
            f.write("py:py-token\n")
        cls.world, world = start_server([binary("arbor-test-world")])
        cls.coordinator, cls.address = start_server(
            [binary("arbor-coordinator"), "--workers=" + world, "--verifiers=" + world,
             "--health_interval_ms=200", "--auth_token_file=" + tokens,
             "--tls_cert=" + cls.path("server.pem"), "--tls_key=" + cls.path("server.key")])

    @classmethod
    def tearDownClass(cls):
        for process in (cls.coordinator, cls.world):
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def path(cls, name):
        return os.path.join(cls.dir, name)

    def test_tls_and_token_are_served(self):
        with Client(self.address, credentials=tls_credentials(self.path("ca.pem")),
                    token="py-token", timeout=30) as client:
            deadline = time.time() + 10
            while True:
                try:
                    result = client.solve("add 2 3", strategy="greedy")
                    break
                except UnavailableError:  # the pool's first health check
                    if time.time() > deadline:
                        raise
                    time.sleep(0.1)
            self.assertEqual(result.answer, "5")

    def test_missing_or_wrong_token_is_refused(self):
        for token in (None, "wrong"):
            with Client(self.address, credentials=tls_credentials(self.path("ca.pem")),
                        token=token, timeout=10) as client:
                with self.assertRaises(UnauthenticatedError) as caught:
                    client.solve("add 2 3", strategy="greedy")
                self.assertIn("authorization" if token else "missing", caught.exception.details)

    def test_a_client_trusting_another_ca_is_refused(self):
        with Client(self.address, credentials=tls_credentials(self.path("other-ca.pem")),
                    token="py-token", timeout=5) as client:
            with self.assertRaises(UnavailableError):
                client.solve("add 2 3", strategy="greedy")

    def test_key_without_certificate_is_a_usage_error(self):
        with self.assertRaises(ValueError):
            tls_credentials(self.path("ca.pem"), key_file=self.path("client.key"))


if __name__ == "__main__":
    unittest.main()
