# A build whose only provisioner echoes, on the boot inputs of
# examples/hello (the same image name, sizes, base and cloud-init), so it
# resumes the guest hello's first build saved. With clock_url set, the
# guest reads the host's clock from a server between two readings of its
# own (the e2e test checks that the host's falls between them).
variable "clock_url" {
  default = ""
}

variable "version" {
  default = "0.0.0-echo"
}

image "hello" {
  version = var.version

  base {
    image = "debian:12"
  }

  disk_size = "3G"
  cpus      = 2
  memory    = "1G"

  cloud_init {
    user_data = file("../../../examples/hello/cloud-config.yaml")
  }

  provision "shell" {
    inline = [
      "echo hello",
      "if [ -n '${var.clock_url}' ]; then g1=$(date +%s.%N); h=$(curl -fsS '${var.clock_url}'); g2=$(date +%s.%N); echo \"clock before=$g1 host=$h after=$g2\"; fi",
    ]
  }
}
