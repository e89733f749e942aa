packer {
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}

locals {
  name       = "debian-app"
  sums_url   = "${trimsuffix(var.image_url, basename(var.image_url))}SHA256SUMS"
  build_time = formatdate("YYYYMMDD-hhmm", timestamp())
  public_key = trimspace(file("${var.ssh_private_key_file}.pub"))
}

source "qemu" "debian" {
  iso_url      = var.image_url
  iso_checksum = "file:${local.sums_url}"
  disk_image   = true
  disk_size    = "3G"
  format       = "qcow2"

  accelerator = "kvm"
  cpus        = 2
  memory      = var.memory
  headless    = true

  disk_interface = "virtio"
  net_device     = "virtio-net"

  cd_files = ["${path.root}/seed/meta-data"]
  cd_content = {
    "user-data" = templatefile("${path.root}/seed/user-data.pkrtpl.hcl", { ssh_key = local.public_key })
  }
  cd_label = "cidata"

  communicator         = "ssh"
  ssh_username         = "packer"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "30m"

  shutdown_command = "sudo shutdown -P now"
  output_directory = "output-${local.name}"
  vm_name          = "${local.name}.qcow2"
  boot_wait        = "5s"
}

build {
  name    = "app"
  sources = ["source.qemu.debian"]

  provisioner "shell" {
    inline = [
      "cloud-init status --wait >/dev/null || true",
      "echo 'build=${build.name} source=${source.name} team=${var.tags["team"]}' | sudo tee /etc/packer-build",
    ]
  }

  provisioner "file" {
    source      = "${path.root}/files/motd"
    destination = "/tmp/motd"
  }

  provisioner "shell" {
    environment_vars = ["APP_VERSION=${var.version}", "BUILT=${local.build_time}"]
    execute_command  = "chmod +x {{ .Path }}; sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    script           = "${path.root}/scripts/setup.sh"
  }

  provisioner "breakpoint" {
    note = "look around before the image is shut down"
  }

  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = false
    custom_data = {
      version = var.version
    }
  }

  post-processor "checksum" {
    checksum_types = ["sha256"]
    output         = "output-${local.name}/{{.BuildName}}_{{.ChecksumType}}.checksum"
  }
}
