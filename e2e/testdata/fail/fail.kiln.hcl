# A build whose second provisioner fails: kiln must name it, exit 3 and store nothing.
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
    inline = ["echo about to fail", "exit 3"]
  }
}
