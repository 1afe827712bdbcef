# A federation over three regions, rendered at plan time: every host gets the configs,
# units and TLS material of what it runs, and nothing else.

variables {
  shard_managers = [
    { host = "sm-eu", region = "eu" },
    { host = "sm-us", region = "us" },
    { host = "sm-ap", region = "ap" },
  ]
  regions = {
    eu = {
      cells = {
        cell-eu-1 = {
          control     = { host = "eu-c1" }
          data_planes = [{ host = "eu-d1" }]
          workers     = [{ host = "eu-w1" }, { host = "eu-w2", sandbox_port_min = 40000, sandbox_port_max = 40999 }]
          weight      = 2
        }
      }
    }
    us = {
      cells = {
        cell-us-1 = {
          control     = { host = "us-c1" }
          data_planes = [{ host = "us-d1" }, { host = "us-d2" }]
          workers     = [{ host = "us-w1" }]
          redis_url   = "redis://us-redis:6379"
        }
      }
    }
    ap = {
      cells = {
        cell-ap-1 = {
          control     = { host = "ap-all" }
          data_planes = [{ host = "ap-all" }]
          workers     = [{ host = "ap-all" }]
        }
      }
    }
  }
  routers = [
    { host = "eu-r1", region = "eu" },
    { host = "us-r1", region = "us", port = 443 },
  ]
  tls = {
    ca_cert = "CA-PEM"
    certs = {
      "sm-eu/shard-manager" = { cert = "SM-EU-CERT", key = "SM-EU-KEY" }
      "sm-us/shard-manager" = { cert = "SM-US-CERT", key = "SM-US-KEY" }
      "sm-ap/shard-manager" = { cert = "SM-AP-CERT", key = "SM-AP-KEY" }
      "eu-c1/cell"          = { cert = "C", key = "K" }
      "eu-d1/cell"          = { cert = "C", key = "K" }
      "eu-w1/worker"        = { cert = "C", key = "K" }
      "eu-w2/worker"        = { cert = "C", key = "K" }
      "us-c1/cell"          = { cert = "C", key = "K" }
      "us-d1/cell"          = { cert = "C", key = "K" }
      "us-d2/cell"          = { cert = "C", key = "K" }
      "us-w1/worker"        = { cert = "C", key = "K" }
      "ap-all/cell"         = { cert = "AP-CELL-CERT", key = "AP-CELL-KEY" }
      "ap-all/worker"       = { cert = "AP-WORKER-CERT", key = "AP-WORKER-KEY" }
      "eu-r1/router"        = { cert = "C", key = "K" }
      "us-r1/router"        = { cert = "C", key = "K" }
    }
  }
  secrets_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
}

run "three_regions" {
  command = plan

  assert {
    condition     = output.shard_manager_addresses == "http://sm-eu:7500,http://sm-us:7500,http://sm-ap:7500"
    error_message = "the replicas' URLs, in order"
  }
  assert {
    condition     = output.router_endpoints == ["http://eu-r1:8000", "http://us-r1:443"]
    error_message = "the routers' endpoints"
  }
  assert {
    condition     = toset(keys(output.hosts)) == toset(["sm-eu", "sm-us", "sm-ap", "eu-c1", "eu-d1", "eu-w1", "eu-w2", "us-c1", "us-d1", "us-d2", "us-w1", "ap-all", "eu-r1", "us-r1"])
    error_message = "one entry per host"
  }

  # Shard managers: raft IDs in order, every member listed, the sealing key, mutual TLS.
  assert {
    condition = alltrue([
      strcontains(output.hosts["sm-us"].files["/etc/baton/shard-manager.toml"].content, "id = 2\n"),
      strcontains(output.hosts["sm-us"].files["/etc/baton/shard-manager.toml"].content, "advertise = \"sm-us:7500\""),
      strcontains(output.hosts["sm-us"].files["/etc/baton/shard-manager.toml"].content, "initial_members = [\"1=sm-eu:7500\", \"2=sm-us:7500\", \"3=sm-ap:7500\"]"),
      strcontains(output.hosts["sm-us"].files["/etc/baton/shard-manager.toml"].content, "key_file = \"/etc/baton/secrets.key\""),
      strcontains(output.hosts["sm-us"].files["/etc/baton/shard-manager.toml"].content, "cert = \"/etc/baton/tls/shard-manager.pem\""),
      output.hosts["sm-us"].files["/etc/baton/tls/shard-manager.key"].content == "SM-US-KEY",
      output.hosts["sm-us"].files["/etc/baton/tls/shard-manager.key"].mode == "0640",
      output.hosts["sm-us"].files["/etc/baton/secrets.key"].content == "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    ])
    error_message = "the second replica's config and material"
  }
  assert {
    condition     = !contains(keys(output.hosts["eu-c1"].files), "/etc/baton/secrets.key") && !contains(keys(output.hosts["eu-r1"].files), "/etc/baton/tls/shard-manager.key")
    error_message = "the secrets key and a role's key stay on the hosts that need them"
  }

  # Cells: control planes announce their data planes (https with TLS), region, weight, store.
  assert {
    condition = alltrue([
      strcontains(output.hosts["us-c1"].files["/etc/baton/cell-cell-us-1.toml"].content, "role = \"control\""),
      strcontains(output.hosts["us-c1"].files["/etc/baton/cell-cell-us-1.toml"].content, "redis_url = \"redis://us-redis:6379\""),
      strcontains(output.hosts["us-c1"].files["/etc/baton/cell-cell-us-1.toml"].content, "data_planes = [\"https://us-d1:8080\", \"https://us-d2:8080\"]"),
      strcontains(output.hosts["us-c1"].files["/etc/baton/cell-cell-us-1.toml"].content, "region = \"us\""),
      strcontains(output.hosts["us-c1"].files["/etc/baton/cell-cell-us-1.toml"].content, "shard_manager = \"http://sm-eu:7500,http://sm-us:7500,http://sm-ap:7500\""),
      strcontains(output.hosts["eu-c1"].files["/etc/baton/cell-cell-eu-1.toml"].content, "path = \"/var/lib/baton/cell-cell-eu-1/cell.redb\""),
      strcontains(output.hosts["eu-c1"].files["/etc/baton/cell-cell-eu-1.toml"].content, "weight = 2"),
    ])
    error_message = "the control planes' configs"
  }
  assert {
    condition = alltrue([
      strcontains(output.hosts["us-d2"].files["/etc/baton/data-plane-cell-us-1-2.toml"].content, "role = \"data\""),
      strcontains(output.hosts["us-d2"].files["/etc/baton/data-plane-cell-us-1-2.toml"].content, "id = \"cell-us-1-dp-2\""),
      strcontains(output.hosts["us-d2"].files["/etc/baton/data-plane-cell-us-1-2.toml"].content, "control_plane = \"http://us-c1:7100\""),
    ])
    error_message = "a data plane follows its control plane"
  }
  assert {
    condition = alltrue([
      strcontains(output.hosts["eu-w2"].files["/etc/baton/worker-cell-eu-1-2.toml"].content, "node_id = \"cell-eu-1-w2\""),
      strcontains(output.hosts["eu-w2"].files["/etc/baton/worker-cell-eu-1-2.toml"].content, "port_range_start = 40000"),
      strcontains(output.hosts["eu-w2"].files["/etc/baton/worker-cell-eu-1-2.toml"].content, "cgroup_parent = \"baton-cell-eu-1-w2\""),
      strcontains(output.hosts["eu-w2"].files["/etc/baton/worker-cell-eu-1-2.toml"].content, "address = \"http://eu-c1:7100\""),
      strcontains(output.hosts["eu-w2"].files["/etc/baton/worker-cell-eu-1-2.toml"].content, "format = \"json\""),
    ])
    error_message = "a worker's config"
  }

  # A host running several processes gets each one's unit, config and role's material.
  assert {
    condition     = output.hosts["ap-all"].units == ["baton-cell-cell-ap-1.service", "baton-data-plane-cell-ap-1-1.service", "baton-worker-cell-ap-1-1.service"]
    error_message = "the units of a host with a whole cell, in start order"
  }
  assert {
    condition = alltrue([
      output.hosts["ap-all"].files["/etc/baton/tls/cell.key"].content == "AP-CELL-KEY",
      output.hosts["ap-all"].files["/etc/baton/tls/worker.key"].content == "AP-WORKER-KEY",
      output.hosts["ap-all"].files["/etc/baton/tls/ca.pem"].content == "CA-PEM",
    ])
    error_message = "one certificate per role on a shared host"
  }

  # Units: workers run as root with a delegated cgroup; the rest as baton, confined.
  assert {
    condition = alltrue([
      strcontains(output.hosts["eu-w1"].files["/etc/systemd/system/baton-worker-cell-eu-1-1.service"].content, "Delegate=yes"),
      !strcontains(output.hosts["eu-w1"].files["/etc/systemd/system/baton-worker-cell-eu-1-1.service"].content, "User=baton"),
      strcontains(output.hosts["eu-r1"].files["/etc/systemd/system/baton-router.service"].content, "User=baton"),
      strcontains(output.hosts["eu-r1"].files["/etc/systemd/system/baton-router.service"].content, "ExecStart=/usr/local/bin/baton-router --config /etc/baton/router.toml"),
      strcontains(output.hosts["eu-r1"].files["/etc/systemd/system/baton-router.service"].content, "ReadWritePaths=/var/lib/baton/router"),
    ])
    error_message = "the units"
  }

  # Prometheus discovers every process by region and cell.
  assert {
    condition = alltrue([
      length(jsondecode(output.prometheus_targets["cells.json"])) == 7,
      jsondecode(output.prometheus_targets["workers.json"])[1].labels.cell == "cell-eu-1",
      jsondecode(output.prometheus_targets["routers.json"])[1].targets == ["us-r1:8001"],
    ])
    error_message = "the Prometheus targets"
  }
}

run "plaintext" {
  command = plan

  variables {
    tls         = null
    secrets_key = null
  }

  assert {
    condition = alltrue([
      strcontains(output.hosts["us-c1"].files["/etc/baton/cell-cell-us-1.toml"].content, "data_planes = [\"http://us-d1:8080\", \"http://us-d2:8080\"]"),
      strcontains(output.hosts["us-c1"].files["/etc/baton/cell-cell-us-1.toml"].content, "plaintext = true"),
      !contains(keys(output.hosts["us-c1"].files), "/etc/baton/tls/ca.pem"),
      strcontains(output.hosts["sm-eu"].files["/etc/baton/shard-manager.toml"].content, "key_file = \"\""),
    ])
    error_message = "without TLS material everything runs plaintext, without a key no credentials are sealed"
  }
}

# A change to one host's process changes that host's files only, so the host module
# (one resource per host, replaced when its own files change) rolls that host alone.
run "a_change_to_one_host" {
  command = plan

  variables {
    routers = [
      { host = "eu-r1", region = "eu" },
      { host = "us-r1", region = "us", port = 444 },
    ]
  }

  assert {
    condition     = output.hosts["us-r1"] != run.three_regions.hosts["us-r1"]
    error_message = "the router's host changes"
  }
  assert {
    condition     = alltrue([for host, entry in output.hosts : entry == run.three_regions.hosts[host] if host != "us-r1"])
    error_message = "no other host changes"
  }
}

# Async calls: each router's own file by default; a shared Redis when one is given.
run "async_queue" {
  command = plan

  assert {
    condition     = strcontains(output.hosts["eu-r1"].files["/etc/baton/router.toml"].content, "\npath = \"/var/lib/baton/router/calls.redb\"\n")
    error_message = "without a Redis, a router queues async calls in its data folder"
  }
}

run "async_queue_in_redis" {
  command = plan

  variables {
    async_redis_url = "redis://queue:6379/2"
  }

  assert {
    condition = alltrue([
      for host in ["eu-r1", "us-r1"] :
      strcontains(output.hosts[host].files["/etc/baton/router.toml"].content, "\nredis_url = \"redis://queue:6379/2\"\n")
    ])
    error_message = "every router shares the Redis queue"
  }
}
