# A template that uses every part of the schema; template_test.go checks
# the exact Spec it decodes to.

variable "version" {
  default     = "1.0.0"
  description = "The image version."
}

variable "cpus" {
  type    = number
  default = 2
}

variable "debug" {
  type    = bool
  default = false
}

variable "api_token" {
  default   = "s3cret"
  sensitive = true
}

image "hello" {
  version = var.version

  base {
    file = "base.qcow2"
  }

  disk_size        = "4G"
  cpus             = var.cpus
  memory           = "1.5G"
  generalize       = false
  compression      = "zlib"
  flatten          = true
  warm             = false
  boot_timeout     = "10m"
  shutdown_timeout = "2m"

  cloud_init {
    user_data = file("cloud-config.yaml")
  }

  provision "file" {
    source      = "app/"
    destination = "/opt/hello"
  }

  provision "shell" {
    inline = [
      "apt-get install -y jq",
      "echo ${upper(var.version)} > /etc/hello-version",
    ]
    env = {
      APP_VERSION = var.version
      DEBUG       = var.debug
      TOKEN       = var.api_token
    }
    expect_reboot = true
    timeout       = "5m"
  }

  provision "shell" {
    script = "setup.sh"
  }

  provision "shell" {
    scripts = ["setup.sh", "scripts/second.sh"]
    user    = "nobody"
  }

  provision "file" {
    source      = "/var/log/hello.log"
    destination = "out/hello.log"
    direction   = "download"
  }
}
