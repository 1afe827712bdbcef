#!/usr/bin/env bash
# Builds the release tarball hosts install from (infra/terraform/modules/host takes it):
# static (musl) binaries of every daemon and tool, the sample functions, the Terraform
# provider, generic systemd units for installs by hand, and the example configs.
#
#   scripts/package.sh [OUT_DIR]     # default: dist/
#
# Writes OUT_DIR/baton-VERSION-x86_64-linux.tar.gz and its .sha256. Needs the Rust target
# x86_64-unknown-linux-musl (rustup target add), musl-gcc (Debian: musl-tools) for the C
# in ring, and protoc (Debian: protobuf-compiler) for the provider; it installs what is
# missing when it can.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-dist}
target=x86_64-unknown-linux-musl
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
name=baton-$version-x86_64-linux
daemons=(baton-shard-manager baton-cell baton-worker baton-router)
tools=(baton baton-loadtest terraform-provider-baton baton-fn-echo baton-fn-spin)

rustup target list --installed | grep -qx "$target" || rustup target add "$target"
missing=()
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
if ((${#missing[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release --locked --target "$target" --workspace --bins

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/$name
mkdir -p "$root/bin" "$root/units" "$root/config"
for binary in "${daemons[@]}" "${tools[@]}"; do
  path=target/$target/release/$binary
  # Static or nothing: a host must not need this build machine's C library.
  if ldd "$path" 2>&1 | grep -qv -e 'not a dynamic executable' -e 'statically linked'; then
    echo "scripts/package.sh: $binary is linked dynamically: $(ldd "$path" 2>&1 | head -n 3)" >&2
    exit 1
  fi
  install -m 0755 "$path" "$root/bin/$binary"
done
strip "$root"/bin/*

# Generic units for one process of each kind per host, configured in /etc/baton (the
# federation module renders the exact units of a layout; these are for installs by hand).
for daemon in "${daemons[@]}"; do
  short=${daemon#baton-}
  {
    printf '[Unit]\nDescription=baton %s\nAfter=network-online.target\nWants=network-online.target\n\n' "$short"
    printf '[Service]\nExecStart=/usr/local/bin/%s --config /etc/baton/%s.toml\n' "$daemon" "$short"
    printf 'Restart=always\nRestartSec=1s\nLimitNOFILE=1048576\n'
    if [ "$daemon" = baton-worker ]; then
      printf '# Sandboxes need namespaces and cgroups: root, with its cgroup subtree delegated.\n'
      printf 'Delegate=yes\nKillMode=mixed\nTimeoutStopSec=30s\n'
    else
      printf 'User=baton\nGroup=baton\nNoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=yes\n'
      printf 'PrivateTmp=yes\nPrivateDevices=yes\nStateDirectory=baton/%s\n' "$short"
    fi
    printf '\n[Install]\nWantedBy=multi-user.target\n'
  } > "$root/units/$daemon.service"
done
cp shard-manager/shard-manager.example.toml cell/cell.example.toml worker/worker.example.toml \
  router/router.example.toml "$root/config/"
cat > "$root/README" <<EOF
baton $version for x86_64 Linux: static binaries (bin/), systemd units for installs by hand
(units/, reading /etc/baton/NAME.toml), and every daemon's configuration with its defaults
(config/). Terraform's infra/terraform/modules/host installs from this tarball with the
configs and units modules/federation renders; docs/terraform.md in the source says how.
EOF

# The provider must start under Terraform (its handshake sets up mutual TLS): a plan of an
# empty configuration with it, installed from a filesystem mirror as docs/terraform.md says.
if command -v terraform >/dev/null; then
  check=$stage/provider-check
  mirror=$check/mirror/registry.terraform.io/baton/baton/$version/linux_amd64
  mkdir -p "$mirror" "$check/work"
  cp "$root/bin/terraform-provider-baton" "$mirror/terraform-provider-baton_v$version"
  printf 'provider_installation {\n  filesystem_mirror {\n    path    = "%s"\n    include = ["registry.terraform.io/baton/*"]\n  }\n  direct {\n    exclude = ["registry.terraform.io/baton/*"]\n  }\n}\n' \
    "$check/mirror" > "$check/cli.tfrc"
  printf 'terraform {\n  required_providers {\n    baton = { source = "baton/baton" }\n  }\n}\nprovider "baton" {}\n' > "$check/work/main.tf"
  if ! (cd "$check/work" && export TF_CLI_CONFIG_FILE=$check/cli.tfrc CHECKPOINT_DISABLE=1 &&
    terraform init -input=false -no-color >/dev/null && terraform plan -input=false -no-color >/dev/null); then
    echo "scripts/package.sh: terraform cannot start the packaged terraform-provider-baton" >&2
    exit 1
  fi
  rm -rf "$check"
fi

mkdir -p "$out"
tar -czf "$out/$name.tar.gz" -C "$stage" --owner=0 --group=0 "$name"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "$out/$name.tar.gz ($(du -h "$out/$name.tar.gz" | cut -f1)): $(cut -d' ' -f1 "$out/$name.tar.gz.sha256")"
