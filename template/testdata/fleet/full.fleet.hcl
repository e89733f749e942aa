# A fleet file that uses every part of the schema; fleet_test.go checks
# the exact FleetFile it decodes to.

variable "version" {
  default = "1.0.0"
}

variable "count" {
  type    = number
  default = 3
}

fleet "web" {
  image  = "hello:${var.version}"
  count  = var.count
  cpus   = 2
  memory = "1.5G"

  port {
    host  = 8080
    guest = 80
  }

  port {
    host  = 8443
    guest = 443
  }

  health "http" {
    path      = "/healthz"
    port      = 8081
    interval  = "2s"
    timeout   = "500ms"
    delay     = "1m30s"
    failures  = 5
    successes = 2
  }
}
