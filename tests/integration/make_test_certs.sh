#!/usr/bin/env bash
# Makes a throwaway PKI for the TLS tests (and for trying TLS by hand):
#   make_test_certs.sh DIR
# writes into DIR (P-256 keys, valid 2 days):
#   ca.pem ca.key              the CA every good certificate chains to
#   server.pem server.key      CN=arbor-server, SAN 127.0.0.1, ::1, localhost
#   client.pem client.key      CN=client-a (mutual TLS client; clientAuth)
#   other-ca.pem               an unrelated CA (a client trusting it must be refused)
#   other-client.pem .key      CN=intruder, signed by the other CA
# Nothing here is secret or reusable: keys are made fresh on every run.
set -euo pipefail
dir=${1:?usage: make_test_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() {  # ca NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 2 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.pem"
}

leaf() {  # leaf NAME CN CA EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -sha256 \
    -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "Arbor test CA"
ca other-ca "Some other CA"
leaf server arbor-server ca \
  "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
leaf client client-a ca \
  "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
leaf other-client intruder other-ca \
  "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
rm -f ./*.srl
chmod 644 ./*.pem
echo "test certificates in $dir"
