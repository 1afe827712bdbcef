# Every validation rule refuses its bad input at plan time (and the good input of
# three_regions.tftest.hcl passes them all).

variables {
  shard_managers = [{ host = "sm-1", region = "eu" }]
  regions = {
    eu = {
      cells = {
        cell-1 = {
          control     = { host = "c1" }
          data_planes = [{ host = "c1" }]
          workers     = [{ host = "w1" }]
        }
      }
    }
  }
  routers = [{ host = "r1", region = "eu" }]
}

run "one_replica_is_allowed" {
  command = plan
}

run "an_even_number_of_replicas" {
  command = plan
  variables {
    shard_managers = [{ host = "sm-1", region = "eu" }, { host = "sm-2", region = "us" }]
  }
  expect_failures = [var.shard_managers]
}

run "a_region_holding_a_majority_of_replicas" {
  command = plan
  variables {
    shard_managers = [{ host = "sm-1", region = "eu" }, { host = "sm-2", region = "eu" }, { host = "sm-3", region = "us" }]
  }
  expect_failures = [var.shard_managers]
}

run "three_replicas_in_one_region_are_allowed" {
  command = plan
  variables {
    shard_managers = [{ host = "sm-1", region = "eu" }, { host = "sm-2", region = "eu" }, { host = "sm-3", region = "eu" }]
  }
}

run "two_replicas_on_one_host" {
  command = plan
  variables {
    shard_managers = [{ host = "sm-1", region = "eu" }, { host = "sm-1", region = "us", port = 7600, admin_port = 7601 }, { host = "sm-3", region = "ap" }]
  }
  expect_failures = [var.shard_managers]
}

run "no_region" {
  command = plan
  variables {
    regions = {}
  }
  expect_failures = [var.regions]
}

run "a_region_without_cells" {
  command = plan
  variables {
    regions = {
      eu = { cells = { cell-1 = { control = { host = "c1" }, data_planes = [{ host = "c1" }], workers = [{ host = "w1" }] } } }
      us = { cells = {} }
    }
  }
  expect_failures = [var.regions]
}

run "a_cell_without_workers" {
  command = plan
  variables {
    regions = { eu = { cells = { cell-1 = { control = { host = "c1" }, data_planes = [{ host = "c1" }], workers = [] } } } }
  }
  expect_failures = [var.regions]
}

run "a_cell_without_data_planes" {
  command = plan
  variables {
    regions = { eu = { cells = { cell-1 = { control = { host = "c1" }, data_planes = [], workers = [{ host = "w1" }] } } } }
  }
  expect_failures = [var.regions]
}

run "one_cell_id_in_two_regions" {
  command = plan
  variables {
    regions = {
      eu = { cells = { cell-1 = { control = { host = "c1" }, data_planes = [{ host = "c1" }], workers = [{ host = "w1" }] } } }
      us = { cells = { cell-1 = { control = { host = "c2" }, data_planes = [{ host = "c2" }], workers = [{ host = "w2" }] } } }
    }
  }
  expect_failures = [var.regions]
}

run "a_cell_id_that_is_not_a_label" {
  command = plan
  variables {
    regions = { eu = { cells = { "Cell_1" = { control = { host = "c1" }, data_planes = [{ host = "c1" }], workers = [{ host = "w1" }] } } } }
  }
  expect_failures = [var.regions]
}

run "a_sandbox_port_range_upside_down" {
  command = plan
  variables {
    regions = { eu = { cells = { cell-1 = { control = { host = "c1" }, data_planes = [{ host = "c1" }], workers = [{ host = "w1", sandbox_port_min = 30000, sandbox_port_max = 29999 }] } } } }
  }
  expect_failures = [var.regions]
}

run "no_router" {
  command = plan
  variables {
    routers = []
  }
  expect_failures = [var.routers]
}

run "a_secrets_key_that_is_not_32_bytes_of_hex" {
  command = plan
  variables {
    secrets_key = "not-a-key"
  }
  expect_failures = [var.secrets_key]
}

run "a_relative_path" {
  command = plan
  variables {
    paths = { data = "var/lib/baton" }
  }
  expect_failures = [var.paths]
}

run "a_log_format_it_does_not_write" {
  command = plan
  variables {
    log_format = "xml"
  }
  expect_failures = [var.log_format]
}

run "two_processes_on_one_port_of_one_host" {
  command = plan
  variables {
    # The router lands on the control plane's host and port.
    routers = [{ host = "c1", region = "eu", port = 7100 }]
  }
  expect_failures = [output.hosts]
}

run "two_routers_on_one_host" {
  command = plan
  variables {
    routers = [{ host = "r1", region = "eu" }, { host = "r1", region = "eu", port = 9000, admin_port = 9001 }]
  }
  expect_failures = [var.routers]
}

run "a_process_without_its_certificate" {
  command = plan
  variables {
    tls = {
      ca_cert = "CA"
      certs = {
        "sm-1/shard-manager" = { cert = "C", key = "K" }
        "c1/cell"            = { cert = "C", key = "K" }
        "r1/router"          = { cert = "C", key = "K" }
      }
    }
  }
  # w1/worker is missing.
  expect_failures = [output.hosts]
}

run "two_workers_on_one_host_with_the_same_sandbox_ports" {
  command = plan
  variables {
    regions = { eu = { cells = { cell-1 = { control = { host = "c1" }, data_planes = [{ host = "c1" }], workers = [{ host = "w1" }, { host = "w1", port = 7400, admin_port = 7401 }] } } } }
  }
  expect_failures = [output.hosts]
}

run "a_process_port_among_the_sandbox_ports" {
  command = plan
  variables {
    routers = [{ host = "w1", region = "eu", port = 20080 }]
  }
  expect_failures = [output.hosts]
}

run "an_async_queue_that_is_not_redis" {
  command = plan
  variables {
    async_redis_url = "http://queue:6379"
  }
  expect_failures = [var.async_redis_url]
}
