# A federation over three regions on machines the operator already has (cloud-neutral: any
# VM resource can take the host module's cloud_init output instead of SSH): one shard-
# manager replica per region, cells with their control, data-plane and worker hosts, routers,
# mutual TLS everywhere. Each host is installed over SSH from the release tarball.

locals {
  # Every host and the roles it runs (a host may run several).
  host_roles = {
    for pair in distinct(flatten([
      for name, r in var.regions : concat(
        [{ host = r.shard_manager, role = "shard-manager" }],
        [for h in r.routers : { host = h, role = "router" }],
        flatten([for id, c in r.cells : concat(
          [{ host = c.control, role = "cell" }],
          [for h in c.data_planes : { host = h, role = "cell" }],
          [for h in c.workers : { host = h, role = "worker" }],
        )]),
      )
    ])) : "${pair.host}/${pair.role}" => pair
  }
}

module "federation" {
  source = "../../modules/federation"

  shard_managers = [for name, r in var.regions : { host = r.shard_manager, region = name }]
  regions = {
    for name, r in var.regions : name => {
      cells = {
        for id, c in r.cells : id => {
          control     = { host = c.control }
          data_planes = [for h in c.data_planes : { host = h }]
          workers     = [for h in c.workers : { host = h }]
        }
      }
    }
  }
  routers = flatten([for name, r in var.regions : [for h in r.routers : { host = h, region = name }]])
  tls = {
    ca_cert = file("${var.tls_dir}/ca.pem")
    certs = {
      for key, pair in local.host_roles : key => {
        cert = file("${var.tls_dir}/${pair.host}-${pair.role}.pem")
        key  = file("${var.tls_dir}/${pair.host}-${pair.role}.key")
      }
    }
  }
  secrets_key = var.secrets_key_file == null ? null : trimspace(file(var.secrets_key_file))
}

module "host" {
  source   = "../../modules/host"
  for_each = toset(nonsensitive(keys(module.federation.hosts)))

  host            = module.federation.hosts[each.key]
  release_tarball = var.release_tarball
  ssh = {
    host         = each.key
    user         = var.ssh_user
    private_key  = var.ssh_private_key_file == null ? null : file(pathexpand(var.ssh_private_key_file))
    agent        = var.ssh_private_key_file == null
    bastion_host = var.bastion_host
  }
}
