# Installs one host's share of a federation (files, data directories, systemd units):
# over SSH on a machine that exists, or as cloud-init user data for any cloud's VM. Each
# host is its own resource, so a change to one host's configuration rolls that host only.

locals {
  # Names this install: the uninstall of an older one leaves a newer one alone.
  id = substr(sha256(jsonencode([var.host, var.bin_dir, var.state_dir])), 0, 16)

  # Each unit's file, as the host's files name it.
  unit_paths = [for unit in var.host.units : one([for path in keys(var.host.files) : path if endswith(path, "/${unit}")])]

  install = templatefile("${path.module}/templates/install.sh.tftpl", {
    id      = local.id, files = var.host.files, units = var.host.units, unit_paths = local.unit_paths, dirs = var.host.dirs,
    bin_dir = var.bin_dir, user = var.host.user, group = var.host.group, state_dir = var.state_dir
  })
  uninstall = templatefile("${path.module}/templates/uninstall.sh.tftpl", {
    id        = local.id, files = var.host.files, units = var.host.units, dirs = var.host.dirs, purge = var.purge_data_on_destroy,
    state_dir = var.state_dir
  })

  # Run as root, or through sudo for another user.
  sudo = var.ssh == null ? "" : (var.ssh.user == "root" ? "" : "sudo ")
}

resource "terraform_data" "install" {
  count = var.ssh == null ? 0 : 1

  triggers_replace = {
    install = sha256(local.install)
    release = var.release_tarball == null ? "" : filesha256(var.release_tarball)
  }
  # What the destroy-time provisioner may read (it sees only this resource).
  input = {
    ssh       = var.ssh
    uninstall = local.uninstall
    sudo      = local.sudo
  }

  # Through self, as the destroy-time provisioner must.
  connection {
    type         = "ssh"
    host         = self.input.ssh.host
    user         = self.input.ssh.user
    port         = self.input.ssh.port
    private_key  = self.input.ssh.private_key
    agent        = self.input.ssh.agent
    host_key     = self.input.ssh.host_key
    bastion_host = self.input.ssh.bastion_host
    timeout      = self.input.ssh.timeout
  }

  provisioner "file" {
    content     = local.install
    destination = "/tmp/baton-install-${local.id}.sh"
  }

  provisioner "file" {
    source      = var.release_tarball == null ? "/dev/null" : var.release_tarball
    destination = "/tmp/baton-release-${local.id}.tar.gz"
  }

  provisioner "remote-exec" {
    inline = [
      "${local.sudo}sh /tmp/baton-install-${local.id}.sh ${var.release_tarball == null ? "" : "/tmp/baton-release-${local.id}.tar.gz"}",
      "rm -f /tmp/baton-install-${local.id}.sh /tmp/baton-release-${local.id}.tar.gz",
    ]
  }

  provisioner "remote-exec" {
    when   = destroy
    inline = ["${self.input.sudo}sh -c ${jsonencode(self.input.uninstall)}"]
  }

  lifecycle {
    # The new configuration is installed before the old one's uninstall runs (which then
    # finds itself replaced and does nothing).
    create_before_destroy = true
  }
}
