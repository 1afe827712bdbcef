# A whole federation on this machine, started by Terraform: one shard manager, two cells
# (a control plane, a data plane and a worker each) and a router, laid out by the
# federation module and run as local processes; then, through terraform-provider-baton,
# a tenant, an API key and a function. Plaintext between the processes: for trying baton
# out on one machine (the multi-region example runs mutual TLS).

locals {
  ports = coalesce(var.ports, [for i in range(16) : var.port_base + i])
  host  = "127.0.0.1"
}

module "federation" {
  source = "../../modules/federation"

  shard_managers = [{ host = local.host, region = "local", port = local.ports[0], admin_port = local.ports[1] }]
  regions = {
    local = {
      cells = {
        for i, cell in ["cell-1", "cell-2"] : cell => {
          control     = { host = local.host, port = local.ports[2 + 6 * i], admin_port = local.ports[3 + 6 * i] }
          data_planes = [{ host = local.host, port = local.ports[4 + 6 * i], admin_port = local.ports[5 + 6 * i] }]
          workers = [{
            host             = local.host, port = local.ports[6 + 6 * i], admin_port = local.ports[7 + 6 * i]
            sandbox_port_min = var.sandbox_port_base + 500 * i, sandbox_port_max = var.sandbox_port_base + 500 * i + 499
          }]
        }
      }
    }
  }
  routers    = [{ host = local.host, region = "local", port = local.ports[14], admin_port = local.ports[15] }]
  log_format = "human"
  paths = {
    bin    = var.bin_dir
    config = "${var.state_dir}/etc"
    data   = "${var.state_dir}/data"
    units  = "${var.state_dir}/units"
  }
}

locals {
  federation = nonsensitive(module.federation.hosts[local.host])
  # Each process, in start order: its name, command line (the unit's ExecStart) and the
  # admin port whose /readyz says it is up.
  admin_ports = {
    "shard-manager"       = local.ports[1]
    "cell-cell-1"         = local.ports[3]
    "data-plane-cell-1-1" = local.ports[5]
    "worker-cell-1-1"     = local.ports[7]
    "cell-cell-2"         = local.ports[9]
    "data-plane-cell-2-1" = local.ports[11]
    "worker-cell-2-1"     = local.ports[13]
    "router"              = local.ports[15]
  }
  processes = [
    for unit in local.federation.units : {
      name = trimsuffix(trimprefix(unit, "baton-"), ".service")
      exec = regex("ExecStart=([^\n]+)", local.federation.files["${var.state_dir}/units/${unit}"].content)[0]
    }
  ]
  start = templatefile("${path.module}/start.sh.tftpl", {
    state         = var.state_dir, files = local.federation.files, dirs = local.federation.dirs,
    processes     = local.processes, admin_ports = local.admin_ports, bin = var.bin_dir,
    shard_manager = module.federation.shard_manager_addresses, cells = 2
  })
  stop = templatefile("${path.module}/stop.sh.tftpl", { state = var.state_dir, processes = reverse(local.processes) })
}

resource "terraform_data" "federation" {
  triggers_replace = sha256(local.start)
  input            = { stop = local.stop }

  provisioner "local-exec" {
    command     = local.start
    interpreter = ["/bin/sh", "-c"]
  }

  provisioner "local-exec" {
    when        = destroy
    command     = self.input.stop
    interpreter = ["/bin/sh", "-c"]
  }
}

provider "baton" {
  shard_manager = module.federation.shard_manager_addresses
  url           = module.federation.router_endpoints[0]
}

resource "baton_tenant" "demo" {
  name           = "demo"
  default_region = "local"
  executables    = true
  depends_on     = [terraform_data.federation]
}

resource "baton_api_key" "demo" {
  tenant = baton_tenant.demo.name
}

resource "baton_function" "echo" {
  name       = "echo"
  api_key    = baton_api_key.demo.secret
  executable = "${var.bin_dir}/baton-fn-echo"
  memory_mib = var.function_memory
  cpu_millis = 100
}
