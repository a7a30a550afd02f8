#!/usr/bin/env bash
# Validates every deployment config that a tool can check:
#   - HAProxy:  haproxy -c -f (with a generated self-signed PEM and the real routing map), and
#               a live routing test through it with three relays on loopback when a relay
#               binary is at hand (HYBRIDGE_RELAY_BIN)
#   - YAML:     every *.yaml parses (PyYAML), then structural checks of the compose file and
#               the Kubernetes manifests (check_configs.py)
#   - routing:  compose routing IDs == routing.map == HAProxy backends; the StatefulSet's
#               ordinal -> routing ID wrapper produces the IDs the Ingress routes
#   - systemd:  systemd-analyze verify (ExecStart pointed at an existing binary)
#   - shell:    sh -n on the scripts; docker compose config if the compose plugin exists
# A missing tool is a SKIP, or a failure with --strict (CI installs them:
# apt-get install haproxy python3-yaml systemd).
set -uo pipefail
cd "$(dirname "$0")"
strict=0
[ "${1:-}" = "--strict" ] && strict=1
pass=0 fail=0 skip=0
ok()   { echo "ok:   $*"; pass=$((pass + 1)); }
bad()  { echo "FAIL: $*"; fail=$((fail + 1)); }
# A check this machine cannot run: a failure with --strict, a counted SKIP otherwise.
miss() { if [ $strict = 1 ]; then bad "$* (tool missing, --strict)"; else echo "SKIP: $*"; skip=$((skip + 1)); fi; }
# A check that is optional everywhere (no Debian package provides its tool): a counted SKIP.
optional() { echo "SKIP: $*"; skip=$((skip + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# HAProxy
if command -v haproxy >/dev/null && command -v openssl >/dev/null; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -keyout "$tmp/k.pem" -out "$tmp/c.pem" 2>/dev/null
    cat "$tmp/c.pem" "$tmp/k.pem" > "$tmp/relay.pem"
    sed -e "s#/usr/local/etc/haproxy/certs/relay.pem#$tmp/relay.pem#" \
        -e "s#/usr/local/etc/haproxy/routing.map#$PWD/compose/haproxy/routing.map#g" \
        compose/haproxy/haproxy.cfg > "$tmp/haproxy.cfg"
    # Relay hostnames resolve only inside compose: drop those warnings, keep the rest.
    if out=$(haproxy -c -f "$tmp/haproxy.cfg" 2>&1); then
        warn=$(echo "$out" | grep WARNING | grep -v "could not resolve address" || true)
        if [ -n "$warn" ]; then bad "haproxy -c: unexpected warnings"; echo "$warn"; else ok "haproxy -c compose/haproxy/haproxy.cfg"; fi
    else
        bad "haproxy -c compose/haproxy/haproxy.cfg"; echo "$out"
    fi
else
    miss "haproxy -c (apt-get install haproxy)"
fi

# HAProxy live: routing by routing ID through the real config, with three relays on
# loopback (needs a relay binary: HYBRIDGE_RELAY_BIN, or target/debug/hybridge-relay).
relay_bin=${HYBRIDGE_RELAY_BIN:-}
if [ -z "$relay_bin" ]; then
    for c in "${CARGO_TARGET_DIR:-../target}/debug/hybridge-relay" ../target/debug/hybridge-relay; do
        [ -x "$c" ] && { relay_bin=$c; break; }
    done
fi
if ! command -v haproxy >/dev/null || [ ! -f "$tmp/relay.pem" ]; then
    miss "haproxy routing test (needs haproxy and openssl: apt-get install haproxy openssl)"
elif [ -z "$relay_bin" ] || [ ! -x "$relay_bin" ]; then
    miss "haproxy routing test (no relay binary: cargo build -p hybridge-relay, or set HYBRIDGE_RELAY_BIN)"
elif out=$(timeout 120 python3 haproxy_routing_test.py "$relay_bin" "$tmp/relay.pem" 2>&1); then
    ok "$out"
else
    bad "haproxy routing test"; echo "$out"
fi

# YAML + structure
py=""
for p in /usr/bin/python3 python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import yaml' 2>/dev/null; then py=$p; break; fi
done
if [ -n "$py" ]; then
    if "$py" check_configs.py; then ok "YAML parsed; compose, Kubernetes and routing checks"; else bad "check_configs.py"; fi
else
    miss "YAML checks (apt-get install python3-yaml)"
fi

# The StatefulSet's routing-ID wrapper, run with a fake pod hostname.
if [ -n "$py" ]; then
    script=$("$py" -c 'import yaml,sys
for d in yaml.safe_load_all(open("k8s/relay.yaml")):
    if d and d["kind"]=="StatefulSet":
        print(d["spec"]["template"]["spec"]["containers"][0]["args"][0])')
    script=${script//exec \/usr\/local\/bin\/hybridge-relay/sh -c \'echo \$HYBRIDGE_RELAY_ROUTING_ID\'}
    got=$(HOSTNAME=hybridge-relay-2 sh -c "$script" 2>&1)
    if [ "$got" = "000002" ]; then ok "StatefulSet wrapper: hybridge-relay-2 -> routing ID 000002"; else bad "StatefulSet wrapper gave '$got'"; fi
    if ! HOSTNAME=relay sh -c "$script" >/dev/null 2>&1; then ok "StatefulSet wrapper refuses a hostname without an ordinal"; else bad "wrapper accepted a hostname without an ordinal"; fi
fi

# systemd
if command -v systemd-analyze >/dev/null; then
    sed 's#^ExecStart=.*#ExecStart=/bin/true#' systemd/hybridge-relay.service > "$tmp/hybridge-relay.service"
    if out=$(systemd-analyze verify "$tmp/hybridge-relay.service" 2>&1) && [ -z "$out" ]; then
        ok "systemd-analyze verify systemd/hybridge-relay.service"
    else
        bad "systemd-analyze verify"; echo "$out"
    fi
    # The key's user unit: its %h and %t resolve for root here as for a user there.
    sed 's#^ExecStart=.*#ExecStart=/bin/true#' systemd/hybridge-key.service > "$tmp/hybridge-key.service"
    if out=$(systemd-analyze verify "$tmp/hybridge-key.service" 2>&1) && [ -z "$out" ]; then
        ok "systemd-analyze verify systemd/hybridge-key.service"
    else
        bad "systemd-analyze verify systemd/hybridge-key.service"; echo "$out"
    fi
else
    miss "systemd-analyze verify (apt-get install systemd)"
fi

# udev rules: every line a comment, blank, or KEY==/KEY+=/KEY= pairs udev knows; the uhid rule
# and the hidraw rule are there (udevadm verify needs systemd 253; Debian 12 has 252).
if python3 - udev/70-hybridge-key.rules <<'PY'
import re, sys
ok = True
rules = []
for n, line in enumerate(open(sys.argv[1]), 1):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    for pair in [p.strip() for p in line.split(",")]:
        if not re.fullmatch(r'(KERNELS?|SUBSYSTEMS?|ATTRS?\{\w+\}|TAG|GROUP|MODE|OPTIONS|ENV\{\w+\})(==|!=|\+=|=)"[^"]*"', pair):
            print(f"line {n}: not a udev key/value pair: {pair}")
            ok = False
    rules.append(line)
ok = ok and any('KERNEL=="uhid"' in r and "uaccess" in r for r in rules)
ok = ok and any('KERNEL=="hidraw*"' in r and "uaccess" in r for r in rules)
sys.exit(0 if ok else 1)
PY
then ok "udev/70-hybridge-key.rules"; else bad "udev/70-hybridge-key.rules"; fi

# Dockerfile basics (no engine needed)
if grep -q '^FROM .* AS builder' Dockerfile && [ "$(grep -c '^FROM ' Dockerfile)" -ge 2 ] \
    && grep -q '^USER 10001' Dockerfile && grep -q '^HEALTHCHECK ' Dockerfile; then
    ok "Dockerfile: multi-stage, non-root USER, HEALTHCHECK"
else
    bad "Dockerfile: needs a builder stage, a runtime stage, USER 10001 and HEALTHCHECK"
fi

# Shell scripts
for s in check.sh compose/make-dev-cert.sh; do
    if sh -n "$s" 2>/dev/null || bash -n "$s"; then ok "syntax $s"; else bad "syntax $s"; fi
done

# docker compose config, only where the plugin exists (no engine needed for it)
if docker compose version >/dev/null 2>&1; then
    mkdir -p compose/certs
    if docker compose -f compose/compose.yaml config -q; then ok "docker compose config"; else bad "docker compose config"; fi
else
    optional "docker compose config (no compose plugin; structure checked by check_configs.py)"
fi

echo "deploy: $pass passed, $fail failed, $skip skipped"
[ $fail = 0 ]
