# Lays a federation out over its hosts: every process (shard-manager replica, cell control
# plane, data plane, worker, router) with its config file and systemd unit, on the host
# named. Pure: it renders files and reads nothing; the host module installs them.

locals {
  # Whether TLS material was given, and for which host/role pairs: not secrets.
  plaintext = nonsensitive(var.tls == null)
  tls_given = local.plaintext ? [] : nonsensitive(keys(var.tls.certs))
  scheme    = local.plaintext ? "http" : "https"

  # Every replica, as the others dial it; raft IDs follow the list's order.
  sm_urls = [for sm in var.shard_managers : "http://${sm.host}:${sm.port}"]
  members = length(var.shard_managers) == 1 ? [] : [for i, sm in var.shard_managers : "${i + 1}=${sm.host}:${sm.port}"]

  cells = merge([
    for region_name, region in var.regions : {
      for id, cell in region.cells : id => merge(cell, { region = region_name })
    }
  ]...)

  # One entry per process: where it runs, what it is, what it listens on.
  shard_manager_processes = [
    for i, sm in var.shard_managers : {
      host  = sm.host, name = "shard-manager", role = "shard-manager", binary = "baton-shard-manager"
      ports = [sm.port, sm.admin_port]
      config = templatefile("${path.module}/templates/shard-manager.toml.tftpl", {
        id       = i + 1, sm = sm, members = local.members, data = "${var.paths.data}/shard-manager"
        key_file = var.secrets_key == null ? "" : "${var.paths.config}/secrets.key"
      })
    }
  ]
  control_processes = [
    for id, cell in local.cells : {
      host  = cell.control.host, name = "cell-${id}", role = "cell", binary = "baton-cell"
      ports = [cell.control.port, cell.control.admin_port]
      config = templatefile("${path.module}/templates/cell-control.toml.tftpl", {
        id          = id, cell = cell, sm_urls = local.sm_urls, data = "${var.paths.data}/cell-${id}"
        data_planes = [for dp in cell.data_planes : "${local.scheme}://${dp.host}:${dp.port}"]
      })
    }
  ]
  data_plane_processes = flatten([
    for id, cell in local.cells : [
      for i, dp in cell.data_planes : {
        host  = dp.host, name = "data-plane-${id}-${i + 1}", role = "cell", binary = "baton-cell"
        ports = [dp.port, dp.admin_port]
        config = templatefile("${path.module}/templates/data-plane.toml.tftpl", {
          id = id, index = i + 1, cell = cell, dp = dp, sm_urls = local.sm_urls
        })
      }
    ]
  ])
  worker_processes = flatten([
    for id, cell in local.cells : [
      for i, w in cell.workers : {
        host  = w.host, name = "worker-${id}-${i + 1}", role = "worker", binary = "baton-worker"
        ports = [w.port, w.admin_port]
        config = templatefile("${path.module}/templates/worker.toml.tftpl", {
          id = id, index = i + 1, cell = cell, w = w, data = "${var.paths.data}/worker-${id}-${i + 1}"
        })
      }
    ]
  ])
  router_processes = [
    for r in var.routers : {
      host  = r.host, name = "router", role = "router", binary = "baton-router"
      ports = [r.port, r.admin_port]
      config = templatefile("${path.module}/templates/router.toml.tftpl", {
        r = r, sm_urls = local.sm_urls, data = "${var.paths.data}/router", async_redis_url = var.async_redis_url
      })
    }
  ]
  processes = concat(
    local.shard_manager_processes, local.control_processes, local.data_plane_processes,
    local.worker_processes, local.router_processes,
  )

  hosts = distinct(local.processes[*].host)

  # Ports bound twice on one host, as "HOST:PORT".
  port_uses = flatten([for p in local.processes : [for port in p.ports : "${p.host}:${port}"]])
  duplicate_ports = distinct([
    for use in local.port_uses : use if length([for u in local.port_uses : u if u == use]) > 1
  ])
  # Workers' sandbox port ranges: disjoint on one host, and clear of every process's ports.
  sandbox_ranges = flatten([
    for id, cell in local.cells : [
      for i, w in cell.workers : { host = w.host, name = "worker-${id}-${i + 1}", min = w.sandbox_port_min, max = w.sandbox_port_max }
    ]
  ])
  overlapping_ranges = distinct(flatten([
    for i, a in local.sandbox_ranges : [
      for j, b in local.sandbox_ranges : "${a.name} and ${b.name} on ${a.host}"
      if a.host == b.host && i < j && a.min <= b.max && b.min <= a.max
    ]
  ]))
  ports_in_ranges = distinct(flatten([
    for p in local.processes : [
      for port in p.ports : [
        for r in local.sandbox_ranges : "${p.host}:${port} (${p.name}, in ${r.name}'s)" if r.host == p.host && port >= r.min && port <= r.max
      ]
    ]
  ]))

  # Host/role pairs that need a certificate.
  tls_needed    = distinct([for p in local.processes : "${p.host}/${p.role}"])
  tls_missing   = local.plaintext ? [] : [for need in local.tls_needed : need if !contains(local.tls_given, need)]
  tls_role_dirs = { for need in local.tls_needed : need => split("/", need)[1] }

  tls_config = {
    for need in local.tls_needed : need => local.plaintext ? "[tls]\nplaintext = true\n" : join("", [
      "[tls]\n",
      "ca = \"${var.paths.config}/tls/ca.pem\"\n",
      "cert = \"${var.paths.config}/tls/${local.tls_role_dirs[need]}.pem\"\n",
      "key = \"${var.paths.config}/tls/${local.tls_role_dirs[need]}.key\"\n",
    ])
  }

  # What each host gets: files (path => content and mode) and the units to run.
  host_files = {
    for host in local.hosts : host => merge(
      {
        for p in local.processes : "${var.paths.config}/${p.name}.toml" => {
          content = "${p.config}${local.tls_config["${p.host}/${p.role}"]}[log]\nformat = \"${var.log_format}\"\n"
          mode    = "0640"
        } if p.host == host
      },
      {
        for p in local.processes : "${var.paths.units}/baton-${p.name}.service" => {
          content = templatefile("${path.module}/templates/unit.service.tftpl", {
            p = p, bin = var.paths.bin, config = "${var.paths.config}/${p.name}.toml", data = var.paths.data, user = var.service_user
          })
          mode = "0644"
        } if p.host == host
      },
      local.plaintext ? {} : merge(
        { "${var.paths.config}/tls/ca.pem" = { content = var.tls.ca_cert, mode = "0644" } },
        merge([
          for need in local.tls_needed : {
            "${var.paths.config}/tls/${local.tls_role_dirs[need]}.pem" = { content = var.tls.certs[need].cert, mode = "0644" }
            "${var.paths.config}/tls/${local.tls_role_dirs[need]}.key" = { content = var.tls.certs[need].key, mode = "0640" }
          } if split("/", need)[0] == host && contains(local.tls_given, need)
        ]...),
      ),
      var.secrets_key == null || !contains(var.shard_managers[*].host, host) ? {} : {
        "${var.paths.config}/secrets.key" = { content = "${var.secrets_key}\n", mode = "0640" }
      },
    )
  }
}
