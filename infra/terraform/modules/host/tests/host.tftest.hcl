# What a host's install does, read from the script and user data rendered at plan time;
# tests/modules.rs in the provider crate runs the script itself.

variables {
  host = {
    files = {
      "/etc/baton/router.toml"                       = { content = "[router]\n", mode = "0640" }
      "/etc/baton/tls/router.key"                    = { content = "KEY", mode = "0640" }
      "/etc/systemd/system/baton-router.service"     = { content = "[Unit]\n", mode = "0644" }
      "/etc/systemd/system/baton-worker-c-1.service" = { content = "[Unit]\n", mode = "0644" }
    }
    units = ["baton-worker-c-1.service", "baton-router.service"]
    dirs  = ["/var/lib/baton/router", "/var/lib/baton/worker-c-1"]
    user  = "baton"
    group = "baton"
  }
}

run "cloud_init" {
  command = plan

  assert {
    condition     = length(terraform_data.install) == 0
    error_message = "no SSH install without ssh"
  }
  assert {
    condition = alltrue([
      startswith(output.cloud_init, "#cloud-config\n"),
      yamldecode(trimprefix(output.cloud_init, "#cloud-config\n")).write_files[0].path == "/var/lib/baton-install/install.sh",
      base64decode(yamldecode(trimprefix(output.cloud_init, "#cloud-config\n")).write_files[0].content) == output.install_script,
      yamldecode(trimprefix(output.cloud_init, "#cloud-config\n")).runcmd[0] == ["sh", "/var/lib/baton-install/install.sh"],
    ])
    error_message = "user data that writes the install script and runs it"
  }
  assert {
    condition = alltrue([
      strcontains(output.install_script, "put '/etc/baton/tls/router.key' '0640' <<'BATON_FILE'\n${base64encode("KEY")}\nBATON_FILE"),
      strcontains(output.install_script, "install -d -m 0750 -o 'baton' -g 'baton' '/var/lib/baton/router'"),
      strcontains(output.install_script, "for unit in baton-worker-c-1.service baton-router.service; do"),
      strcontains(output.install_script, "baton-router.service /etc/systemd/system/baton-router.service\n"),
      !strcontains(output.install_script, "KEY\n"),
    ])
    error_message = "the script writes every file (base64) with its mode, makes the data directories, starts the units in order"
  }
  assert {
    condition     = strcontains(output.uninstall_script, "rm -f '/etc/baton/router.toml'") && !strcontains(output.uninstall_script, "rm -rf '/var/lib/baton/router'")
    error_message = "uninstall removes files and keeps data by default"
  }
}

run "cloud_init_downloads_the_release_it_checks" {
  command = plan
  variables {
    release_url           = "https://releases.example/baton-0.1.0-x86_64-linux.tar.gz"
    release_sha256        = "0000000000000000000000000000000000000000000000000000000000000000"
    purge_data_on_destroy = true
  }
  assert {
    condition = alltrue([
      strcontains(yamldecode(trimprefix(output.cloud_init, "#cloud-config\n")).runcmd[0][2], "curl -fsSL --retry 5 -o /var/lib/baton-install/release.tar.gz 'https://releases.example/baton-0.1.0-x86_64-linux.tar.gz'"),
      strcontains(yamldecode(trimprefix(output.cloud_init, "#cloud-config\n")).runcmd[0][2], "sha256sum -c -"),
      strcontains(output.uninstall_script, "rm -rf '/var/lib/baton/router'"),
    ])
    error_message = "the release is downloaded and checked before the install; purge removes data"
  }
}

run "ssh" {
  command = plan
  variables {
    ssh = { host = "10.0.0.5", user = "admin" }
  }
  assert {
    condition     = length(terraform_data.install) == 1 && terraform_data.install[0].input.sudo == "sudo "
    error_message = "an SSH install, through sudo for a user other than root"
  }
}

run "a_mode_that_is_not_octal" {
  command = plan
  variables {
    host = {
      files = { "/etc/baton/router.toml" = { content = "", mode = "rw-r-----" } }
      units = [], dirs = [], user = "baton", group = "baton"
    }
  }
  expect_failures = [var.host]
}

run "a_unit_without_its_file" {
  command = plan
  variables {
    host = { files = {}, units = ["baton-router.service"], dirs = [], user = "baton", group = "baton" }
  }
  expect_failures = [var.host]
}

run "a_relative_file_path" {
  command = plan
  variables {
    host = { files = { "etc/baton/x" = { content = "", mode = "0640" } }, units = [], dirs = [], user = "baton", group = "baton" }
  }
  expect_failures = [var.host]
}

run "a_release_url_without_its_checksum" {
  command = plan
  variables {
    release_url = "https://releases.example/baton.tar.gz"
  }
  expect_failures = [var.release_sha256]
}
