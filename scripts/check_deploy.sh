#!/usr/bin/env bash
# Checks deploy/ (docs/operations.md#dashboards-and-alerts, #deployment-examples):
#   - the alert rules parse and their unit tests pass (promtool, Debian's prometheus);
#   - the Prometheus config of compose.yaml loads (promtool check config);
#   - the Grafana dashboard is JSON whose queries parse as PromQL and name only the
#     series and labels smsgw exports (scripts/check_deploy.py);
#   - the Kubernetes manifests validate against the Kubernetes API's JSON schemas in
#     strict mode (kubernetes-validate, schemas shipped in the PyPI package), and the
#     routing file in their ConfigMap is one smsgw accepts;
#   - compose.yaml validates against the compose spec (check-jsonschema's vendored
#     schema; there is no Docker engine, so no `docker compose config`);
#   - nginx.conf passes `nginx -t` (Debian's nginx; the replicas' host names, which
#     only compose's DNS knows, are replaced by 127.0.0.1 in a scratch copy);
#   - every YAML file passes yamllint.
# Installs promtool and nginx from Debian's packages when missing (as root);
# `--install` only does that (scripts/test.sh: tests/e2e/test_deploy_nginx.py runs nginx).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from Debian: ${missing[*]}"
  apt-get update -qq
  # The packages' services are not needed (and may be refused by policy-rc.d).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ "${1:-}" != "--install" ] || exit 0

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "--- promtool: alert rules, their unit tests, the compose Prometheus config"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml
promtool check config deploy/prometheus/prometheus.yml

echo "--- dashboard and rules against the server's metrics"
"$PY" scripts/check_deploy.py --promql-out "$scratch/dashboard_rules.yml"
promtool check rules "$scratch/dashboard_rules.yml"

echo "--- Kubernetes manifests (strict, Kubernetes 1.30 and 1.37)"
for version in 1.30.0 1.37.0; do
  "$BIN/kubernetes-validate" --strict --quiet -k "$version" \
    deploy/kubernetes/configmap.yaml deploy/kubernetes/deployment.yaml \
    deploy/kubernetes/services.yaml deploy/kubernetes/pdb.yaml
done
echo "ok -- kubernetes manifests"

echo "--- compose.yaml"
"$BIN/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "--- nginx -t"
sed -E 's/smsgw-[0-9]+:/127.0.0.1:/' deploy/nginx/nginx.conf >"$scratch/nginx.conf"
"$NGINX" -t -q -e stderr -p "$scratch" -c "$scratch/nginx.conf" -g "pid $scratch/nginx.pid;"
echo "ok -- nginx.conf"

echo "--- yamllint"
"$BIN/yamllint" --strict -c deploy/.yamllint.yaml deploy/
echo "ok -- yamllint"
