# A build whose second provisioner fills the guest's disk and fails: kiln
# must name it, show its last lines, say the disk is full, exit 3 and store
# nothing (or keep the VM with --on-error=abort).
image "broken" {
  version = "1.0.0"
  base {
    image = "debian:12"
  }
  memory = "512M"
  provision "shell" {
    inline = ["echo preparing"]
  }
  provision "shell" {
    inline = [
      "set -e",
      "echo about to fill the disk",
      # Take what df offers at once, then write on (root may also use the
      # blocks ext4 reserves for it) until the disk refuses.
      "fallocate -l $(( $(df --output=avail -B1 / | tail -n 1) - 65536 )) /var/tmp/fill",
      "dd if=/dev/zero of=/var/tmp/fill2 bs=1M status=none",
    ]
  }
}
