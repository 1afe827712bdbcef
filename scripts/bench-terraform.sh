#!/usr/bin/env bash
# Terraform's two figures of issue 14 (docs/BENCHMARKS.md, "Terraform"), with release
# binaries on this machine:
#   1. examples/local: seconds from `terraform apply` to the first successful call of the
#      function it deploys (and the apply's own time), over ROUNDS applies and destroys;
#   2. 1,000 baton_function resources on that federation: the apply that creates them, then
#      `terraform plan` with all of them in the state (refresh included), ROUNDS times.
#
#   cargo build --release --workspace && scripts/bench-terraform.sh [ROUNDS]   # default 3
#
# Run as root (the workers make namespaces and cgroups). Everything runs under a temporary
# folder, which is removed with the federation at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
repo=$PWD
bin=$repo/target/release
for b in baton baton-shard-manager baton-cell baton-worker baton-router baton-fn-echo terraform-provider-baton; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b: cargo build --release --workspace" >&2; exit 1; }
done

work=$(mktemp -d)
cleanup() {
  if [ -d "$work/tf/examples/local/.terraform" ]; then
    (cd "$work/tf/examples/local" && terraform destroy -auto-approve -input=false -no-color >/dev/null 2>&1) || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The provider from a filesystem mirror, as docs/terraform.md installs it.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
mirror=$work/mirror/registry.terraform.io/baton/baton/$version/linux_amd64
mkdir -p "$mirror"
cp "$bin/terraform-provider-baton" "$mirror/terraform-provider-baton_v$version"
cat > "$work/cli.tfrc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$work/mirror"
    include = ["registry.terraform.io/baton/*"]
  }
  direct {
    exclude = ["registry.terraform.io/baton/*"]
  }
}
EOF
export TF_CLI_CONFIG_FILE=$work/cli.tfrc TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
export TF_VAR_bin_dir=$bin TF_VAR_state_dir=$work/federation
unset BATON_SHARD_MANAGER BATON_URL BATON_API_KEY BATON_CA BATON_CERT BATON_KEY
cp -r infra/terraform "$work/tf"
rm -rf "$work/tf/provider"
local_dir=$work/tf/examples/local
(cd "$local_dir" && terraform init -input=false -no-color >/dev/null)

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

echo "round,apply_s,first_call_s"
for round in $(seq "$rounds"); do
  start=$(now)
  (cd "$local_dir" && terraform apply -auto-approve -input=false -no-color >/dev/null)
  applied=$(now)
  router=$(cd "$local_dir" && terraform output -raw router_url)
  key=$(cd "$local_dir" && terraform output -raw api_key)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" -d x "$router/function/echo")" = 200 ]; do
    sleep 0.01
  done
  called=$(now)
  echo "$round,$(elapsed "$start" "$applied"),$(elapsed "$start" "$called")"
  if [ "$round" -lt "$rounds" ]; then
    (cd "$local_dir" && terraform destroy -auto-approve -input=false -no-color >/dev/null)
  fi
done

# 1,000 functions on the federation left up, managed with the demo tenant's key.
many=$work/many
mkdir -p "$many"
cat > "$many/main.tf" <<EOF
terraform {
  required_providers {
    baton = { source = "baton/baton" }
  }
}
provider "baton" {
  url     = "$router"
  api_key = "$key"
}
resource "baton_function" "f" {
  count      = 1000
  name       = "f-\${count.index}"
  executable = "$bin/baton-fn-echo"
  memory_mib = 64
  cpu_millis = 100
  max_scale  = 1
}
EOF
cd "$many"
terraform init -input=false -no-color >/dev/null
start=$(now)
terraform apply -auto-approve -input=false -no-color >/dev/null
echo "apply of 1000 baton_function: $(elapsed "$start" "$(now)") s"
echo "round,plan_1000_s"
for round in $(seq "$rounds"); do
  start=$(now)
  code=0
  terraform plan -detailed-exitcode -input=false -no-color >/dev/null || code=$?
  [ "$code" = 0 ] || { echo "the plan of 1000 functions was not empty (exit $code)" >&2; exit 1; }
  echo "$round,$(elapsed "$start" "$(now)")"
done
start=$(now)
terraform destroy -auto-approve -input=false -no-color >/dev/null
echo "destroy of 1000 baton_function: $(elapsed "$start" "$(now)") s"
