# A NoCloud-net seed served over Packer's HTTP server, passed to the guest
# through SMBIOS (no CD-ROM).

variable "image_url" {
  type = string
}

variable "image_checksum" {
  type = string
  validation {
    condition     = length(split(":", var.image_checksum)) == 2
    error_message = "The image_checksum must be ALGO:HEX."
  }
}

variable "ssh_password" {
  type      = string
  default   = "packer"
  sensitive = true
}

locals {
  vm_name = "debian-http"
}

source "qemu" "cloud" {
  iso_url          = var.image_url
  iso_checksum     = var.image_checksum
  disk_image       = true
  use_backing_file = false
  skip_resize_disk = true
  format           = "qcow2"
  disk_compression = true
  memory           = 768

  http_directory = "${path.root}/http"
  qemuargs = [
    ["-smbios", "type=1,serial=ds=nocloud-net;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/"],
  ]

  ssh_username     = "packer"
  ssh_password     = var.ssh_password
  ssh_timeout      = "30m"
  shutdown_command = "echo '${var.ssh_password}' | sudo -S shutdown -P now"
  shutdown_timeout = "3m"

  output_directory = "build/${local.vm_name}"
  vm_name          = "${local.vm_name}.qcow2"
}

build {
  sources = ["source.qemu.cloud"]

  provisioner "shell" {
    execute_command = "echo '${var.ssh_password}' | sudo -S sh -c '{{ .Vars }} {{ .Path }}'"
    inline = [
      "test \"$(id -u)\" = 0",
      "echo seeded-over-http > /etc/seed-source",
      "exit 3",
    ]
    valid_exit_codes = [0, 3]
  }

  provisioner "shell" {
    only   = ["qemu.other"]
    inline = ["exit 1"]
  }

  post-processors {
    post-processor "manifest" {
      output     = "build/packer-manifest.json"
      strip_path = true
    }
  }
}
