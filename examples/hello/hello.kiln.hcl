# The hello example: a tiny web service baked into a Debian image.
#   kiln build examples/hello/hello.kiln.hcl                      -> hello:1.0.0
#   kiln build examples/hello/hello.kiln.hcl --var version=1.1.0  -> hello:1.1.0

variable "version" {
  default     = "1.0.0"
  description = "the app's version, which is also the image version"
}

variable "greeting" {
  default = "hello"
}

variable "deploy_token" {
  default     = ""
  sensitive   = true
  description = "a credential the app reads at run time; kiln masks it in output, logs and manifests"
}

variable "base" {
  default     = "debian:12"
  description = "the image to build on (made by `kiln base debian`), or an earlier hello"
}

image "hello" {
  version = var.version

  base {
    image = var.base
  }

  disk_size = "3G"
  cpus      = 2
  memory    = "1G"

  cloud_init {
    user_data = file("cloud-config.yaml")
  }

  # The app and its systemd unit.
  provision "file" {
    source      = "app/"
    destination = "/opt/hello"
  }

  # A system package from Debian's mirror.
  provision "shell" {
    inline = [
      "apt-get update -q",
      "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends jq",
    ]
  }

  # Runtime configuration and the service itself.
  provision "shell" {
    script = "setup.sh"
    env = {
      APP_VERSION  = var.version
      GREETING     = var.greeting
      DEPLOY_TOKEN = var.deploy_token
    }
  }

  # A smoke test from an unprivileged account, as the service's clients
  # would reach it: provisioners run as root unless they name a user.
  provision "shell" {
    user   = "nobody"
    inline = ["echo \"$(id -un) sees: $(curl -fsS http://127.0.0.1:8080/)\""]
  }
}
