#!/bin/sh
# Writes certs/relay.pem (self-signed certificate + key, the single-file form HAProxy takes)
# for trying the compose cluster locally. Use a real certificate for the real hostname.
set -eu
host=${1:-localhost}
dir=$(dirname "$0")/certs
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
cat "$tmp/cert.pem" "$tmp/key.pem" > "$dir/relay.pem"
chmod 600 "$dir/relay.pem"
echo "wrote $dir/relay.pem for $host"
